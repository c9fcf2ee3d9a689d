"""Payments' per-posting Python on the request path without the enum's, the Mapping ABC's and
contextlib's helpers (issue 13, pay14): a payment's purpose and a PaymentIntent's status looked
up in dicts by their strings, a Payment message's metadata copied key by key, the settlement
stream's wake-up wait timed out by try. Each keeps its answers (checked here case by case) and
is checked to call none of those helpers (cProfile, the call counts of round 14's measurement)."""

from __future__ import annotations

import asyncio
import pstats
from collections.abc import Callable
from typing import Any

import pytest

from payments.adapters.stripe_provider import _STATUS, IntentStatus, intent_from
from payments.domain import ledger
from payments.domain.ledger import Purpose, purpose_of
from payments.domain.model import PaymentState
from payments.domain.provider import ProviderStatus
from payments.entrypoints.conversions import payment_msg
from payments.service_layer.wakeup import Wakeup
from tests.support.payments_helpers import card_payment
from tests.support.python_calls import profiled


def _files_called(call: Callable[[], Any]) -> set[str]:
    """The source files of every Python function (and module of every builtin) `call` ran."""
    call()  # (anything cached on a first call is not what is measured)
    with profiled() as profile:
        call()
    return {file for (file, _, _) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, Purpose.FEE),
        ({"subsystem": "jobs", "type": "job_posting"}, Purpose.FEE),
        ({"type": "coin_purchase"}, Purpose.COIN_PURCHASE),
        ({"purpose": "marketplace", "type": "coin_purchase"}, Purpose.MARKETPLACE),
        ({"purpose": "nonsense", "type": "job_payment"}, Purpose.JOB_PAYMENT),
        ({"purpose": "", "type": "fee"}, Purpose.FEE),
        ({"purpose": "FEE", "type": "Marketplace"}, Purpose.FEE),  # values are case-sensitive
    ],
)
def test_a_payments_purpose_is_its_metadatas(metadata: dict[str, str], expected: Purpose) -> None:
    found = purpose_of(metadata)
    assert found is expected
    assert ledger.captures_at_once(metadata) is (
        expected in (Purpose.COIN_PURCHASE, Purpose.JOB_PAYMENT)
    )


def test_the_purpose_is_looked_up_without_the_enums_machinery() -> None:
    metadata = {"subsystem": "jobs", "type": "job_posting", "job_id": "job_1"}
    called = _files_called(lambda: purpose_of(metadata))
    assert not {f for f in called if f.endswith("enum.py")}, called


def _intent(status: str, **more: Any) -> dict[str, Any]:
    return {"id": "pi_1", "object": "payment_intent", "status": status, "amount": 14900, **more}


def test_every_stripe_status_maps_as_the_enum_did() -> None:
    assert set(_STATUS) == set(IntentStatus)
    for status, mapped in _STATUS.items():  # the enum-keyed table the adapter looked up before
        assert intent_from(_intent(status.value)).status is mapped
    assert intent_from(_intent("requires_capture")).status is ProviderStatus.AUTHORIZED
    failed = _intent("requires_payment_method", last_payment_error={"code": "card_declined"})
    assert intent_from(failed).status is ProviderStatus.FAILED


@pytest.mark.parametrize("status", ["bogus", "SUCCEEDED", None, ["succeeded"]])
def test_a_status_stripe_does_not_have_is_refused_as_before(status: Any) -> None:
    with pytest.raises(ValueError):
        intent_from(_intent(status))
    with pytest.raises(KeyError):
        intent_from({"id": "pi_1", "amount": 100})


def test_an_intent_is_read_without_the_enums_machinery() -> None:
    data = _intent("requires_capture", currency="usd", amount_capturable=14900, metadata={"a": "b"})
    called = _files_called(lambda: intent_from(data))
    assert not {f for f in called if f.endswith("enum.py")}, called


def test_a_payment_message_carries_its_metadata_without_the_abc() -> None:
    metadata = {"subsystem": "jobs", "type": "job_posting", "job_id": "job_1", "saga_id": "s_1"}
    payment = card_payment("pay_1", "gtx_1", state=PaymentState.CAPTURED, metadata=metadata)
    message = payment_msg(payment)
    assert dict(message.metadata) == metadata
    assert message.payment_id == "pay_1" and message.amount.amount_minor == 100
    assert dict(payment_msg(card_payment("pay_2", "gtx_2", metadata={})).metadata) == {}
    called = _files_called(lambda: payment_msg(payment))
    assert not {f for f in called if "_collections_abc" in f or f == "<frozen abc>"}, called


async def test_the_wakeup_wait_answers_as_before_without_contextlib() -> None:
    wakeup = Wakeup()
    assert await wakeup.wait(0.01) is False  # timed out: no notification
    waiting = asyncio.ensure_future(wakeup.wait(5.0))
    await asyncio.sleep(0)
    wakeup.notify()
    assert await waiting is True
    with profiled() as profile:
        await wakeup.wait(0.001)
    called = {file for (file, _, _) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]
    assert not {f for f in called if f.endswith("contextlib.py")}, called


async def test_a_notification_nobody_listens_for_makes_no_event() -> None:
    wakeup = Wakeup()
    first = wakeup.listen()
    assert wakeup.listen() is first  # one event until the next notification
    wakeup.notify()
    assert first.is_set()
    fresh = wakeup.listen()
    assert fresh is not first and not fresh.is_set()  # a later listener waits for the next one
    wakeup.notify()
    assert fresh.is_set()
    with profiled() as profile:
        for _ in range(100):  # commits that notify with nobody listening
            wakeup.notify()
    called = {name for (_, _, name) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]
    assert not {name for name in called if "Event" in name or name == "__init__"}, called
    waiting = asyncio.ensure_future(wakeup.wait(5.0))  # a wait after them waits for the next
    await asyncio.sleep(0.01)
    assert not waiting.done()
    wakeup.notify()
    assert await waiting is True


def test_an_id_in_a_path_is_quoted_as_quote_plus_did_and_a_stripe_id_not_at_all() -> None:
    from urllib.parse import quote_plus

    from payments.adapters.stripe_provider import _path_id

    for value in ("pi_3NxAbC09", "a~b.c-d_e", "", "pi 1", "a/b", "pi_1%2F", "ü", "x\n", "a+b"):
        assert _path_id(value) == quote_plus(value), value
    called = _files_called(lambda: _path_id("pi_3NxAbC09zyXW"))
    assert not {f for f in called if f.endswith("urllib/parse.py")}, called


def test_provider_work_nobody_waits_for_costs_no_event_nor_contextlib() -> None:
    from payments.service_layer.in_flight import InFlight

    in_flight = InFlight()

    def work() -> None:
        # nested (e.g. a follow-up round of the same drive): the outermost mark ends it
        with in_flight.working_on("pay_1"), in_flight.working_on("pay_1"):
            pass

    called = _files_called(work)
    assert not {f for f in called if f.endswith(("contextlib.py", "asyncio/locks.py"))}, called
    # an error in the block goes on, and the mark still ends
    with pytest.raises(RuntimeError), in_flight.working_on("pay_1"):
        raise RuntimeError("provider call blew up")
    assert in_flight._done == {}


async def test_a_waiter_that_came_during_the_work_is_released_by_its_end() -> None:
    from payments.service_layer.in_flight import InFlight

    in_flight = InFlight()
    with in_flight.working_on("pay_1"):
        waiter = asyncio.ensure_future(in_flight.settled("pay_1", 5.0))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        assert not await in_flight.settled("pay_1", 0.01)  # still going: timed out
    assert await waiter is True
    assert not await in_flight.settled("pay_1", 1.0)  # nothing under way any more
