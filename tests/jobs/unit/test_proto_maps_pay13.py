"""A settlement event's metadata is copied from the protobuf map in one comprehension, and a
payment state's name looked up by number (issue 13, pay13): the same values as dict() and
State.Name gave, without the Mapping ABC's keys view (a Python generator step per key) or
Name's call; a state the contract lacks is refused by Name as before."""

from __future__ import annotations

import pstats

import pytest

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as ppb
from jobs.adapters.participants import try_result_from_payment
from jobs.entrypoints.conversions import settlement_event_from_proto
from tests.support.python_calls import profiled

METADATA = {"subsystem": "jobs", "type": "job_posting", "job_id": "job_1", "saga_id": "saga_1"}


def _event(state: int = ppb.Payment.CAPTURED) -> ppb.SettlementEvent:
    return ppb.SettlementEvent(
        event_id="evt_1",
        cursor=7,
        type="payment.captured",
        payment=ppb.Payment(
            payment_id="pay_1",
            branch=common_pb2.TccBranch(global_tx_id="saga_1", branch_id="payment"),
            state=state,
            metadata=METADATA,
        ),
    )


def _called(fn) -> set[str]:
    fn()
    with profiled() as profile:
        fn()
    return {f"{file}:{name}" for (file, _, name) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]


def test_an_events_metadata_and_state_name_are_as_before() -> None:
    message = _event()
    event = settlement_event_from_proto(message)
    assert event.metadata == dict(message.payment.metadata) == METADATA
    assert type(event.metadata) is dict
    assert event.result.provider_state == ppb.Payment.State.Name(ppb.Payment.CAPTURED)
    assert (event.event_id, event.cursor, event.global_tx_id) == ("evt_1", 7, "saga_1")
    called = _called(lambda: settlement_event_from_proto(message))
    assert not {c for c in called if "_collections_abc" in c}, called
    assert not {c for c in called if c.endswith(":Name")}, called


def test_every_state_has_its_contract_name_and_an_unknown_one_is_refused() -> None:
    for name, number in ppb.Payment.State.items():
        result = try_result_from_payment(ppb.Payment(payment_id="pay_1", state=number))
        assert result.provider_state == name
    with pytest.raises(ValueError):
        try_result_from_payment(ppb.Payment(payment_id="pay_1", state=999))
