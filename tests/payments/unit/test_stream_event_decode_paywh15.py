"""The settlement stream's decoding of an outbox row (issue 13, paywh15): per event the row's
mapping is read once, a payment's dates are parsed in line, and a withdrawal is decoded only
when the snapshot has one: 23 Python-level calls per event from the read to the serialized
message (was 28, the same measurement). The event decoded is unchanged, field by field."""

from __future__ import annotations

import pstats
from datetime import UTC, datetime, timedelta
from typing import Any

from payments.adapters import event_repositories, snapshots
from payments.domain.events import EventType
from payments.domain.model import PaymentState
from tests.support.payments_helpers import card_payment
from tests.support.python_calls import profiled


class _Row:
    """A row as SQLAlchemy gives it: its columns through `_mapping` (a property: each read is a
    Python call, counted here)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values
        self.reads = 0

    @property
    def _mapping(self) -> dict[str, Any]:
        self.reads += 1
        return self._values


def _row(**snapshot_changes: Any) -> _Row:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    payment = card_payment(
        "pay_dec1",
        "gtx_dec1",
        state=PaymentState.CAPTURED,
        pending_op=None,
        captured_minor=100,
        at=now,
        next_poll_at=now + timedelta(seconds=5),
    )
    snapshot = {**snapshots.dump(payment, None), **snapshot_changes}
    return _Row(
        {
            "event_id": "ev_dec1",
            "type": str(EventType.PAYMENT_CAPTURED),
            "occurred_at": now,
            "subsystem": "jobs",
            "snapshot": snapshot,
            "cursor": 7,
            "position": 4242,
        }
    )


def _called(row: _Row, position: bool) -> set[str]:
    event_repositories._outbox(_row(), position=position)  # (warm)
    with profiled() as profile:
        event_repositories._outbox(row, position=position)
    return {name for (_, _, name) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]


def test_a_payment_event_is_decoded_reading_its_row_once_without_date_or_withdrawal_helpers() -> (
    None
):
    row = _row()
    called = _called(row, position=True)
    assert row.reads == 1
    assert "_dt" not in called and "load_withdrawal" not in called, called


def test_the_decoded_event_is_the_same() -> None:
    event = event_repositories._outbox(_row(), position=True)
    assert event.cursor == 4242  # the stream's position
    assert event_repositories._outbox(_row()).cursor == 7  # the callback relay's row key
    assert event.withdrawal is None and event.transaction is None
    payment = event.payment
    assert payment is not None
    assert payment.created_at == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert payment.updated_at == payment.created_at
    assert payment.next_poll_at == payment.created_at + timedelta(seconds=5)
    assert payment.state is PaymentState.CAPTURED and payment.captured_minor == 100
    # Dates a snapshot lacks or left empty stay None, as _dt made them.
    row = _row()
    row._values["snapshot"]["payment"] = {
        **row._values["snapshot"]["payment"],
        "next_poll_at": None,
    }
    assert event_repositories._outbox(row).payment.next_poll_at is None  # type: ignore[union-attr]
