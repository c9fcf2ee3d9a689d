"""Enums written as their values and read back by look-up tables (issue 13: no `value` property
nor enum call per field): what is written is a plain str equal to the member's value, whatever
is read is the member again, and every member of each enum has its entry."""

from __future__ import annotations

import enum

import pytest

from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from payments.adapters import snapshots, wallet_ledger
from payments.adapters.repositories import _payment_values
from payments.domain.credits import GRANT_KIND_OF, GRANT_STATUS_OF, GrantKind, GrantStatus
from payments.domain.events import EVENT_TYPE_OF, EventType
from payments.domain.ledger import KIND_OF, Account, Kind, Leg
from payments.domain.model import (
    METHOD_OF,
    PENDING_OP_OF,
    STATE_OF,
    Method,
    PaymentState,
    PendingOp,
)
from tests.payments.unit.test_event_snapshots import _payment


@pytest.mark.parametrize(
    ("table", "cls"),
    [
        (METHOD_OF, Method),
        (STATE_OF, PaymentState),
        (PENDING_OP_OF, PendingOp),
        (KIND_OF, Kind),
        (GRANT_KIND_OF, GrantKind),
        (GRANT_STATUS_OF, GrantStatus),
        (EVENT_TYPE_OF, EventType),
    ],
)
def test_each_table_reads_every_member_by_its_value(
    table: dict[str, enum.Enum], cls: type[enum.Enum]
) -> None:
    assert table == {m.value: m for m in cls}
    for member in cls:
        assert table[str(member)] is member
        assert type(str(member)) is str and str(member) == member.value


def test_a_payment_row_holds_plain_strings_for_its_enums() -> None:
    for payment in (_payment(), _payment(pending_op=None)):
        values = _payment_values(payment)
        for column, member in (
            ("method", payment.method),
            ("state", payment.state),
            ("pending_op", payment.pending_op),
        ):
            if member is None:
                assert values[column] is None
            else:
                assert type(values[column]) is str and values[column] == member.value


def test_a_snapshot_writes_enum_values_and_reads_members_back() -> None:
    payment = _payment()
    written = snapshots.dump(payment, None)["payment"]
    for name in ("method", "state", "pending_op"):
        assert type(written[name]) is str
    back, _ = snapshots.load({"payment": written})
    assert back is not None
    assert (back.method, back.state, back.pending_op) == (
        payment.method,
        payment.state,
        payment.pending_op,
    )
    assert isinstance(back.state, PaymentState)


def test_a_leg_round_trips_its_kinds() -> None:
    leg = Leg(Account("o", "USD", Kind.PROVIDER_CLEARING), Account("p", "USD", Kind.ESCROW), 5)
    data = leg.to_json()
    assert data["from"] == ["o", "USD", "PROVIDER_CLEARING"]
    assert type(data["to"][2]) is str  # type: ignore[index]
    assert Leg.from_json(data) == leg


def test_each_kind_is_the_wallet_account_kind_of_its_name() -> None:
    for kind in Kind:
        assert wallet_ledger._ACCOUNT_KINDS[kind] == wpb.AccountKind.Value(
            f"ACCOUNT_KIND_{kind.value}"
        )
