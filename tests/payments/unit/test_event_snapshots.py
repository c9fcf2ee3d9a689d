"""The payment a settlement event carries, as written to the outbox (adapters/snapshots.py):
every public field, as JSON, and read back as it was."""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import UTC, date, datetime, timedelta

from hirepay_platform.tcc import TccBranch
from payments.adapters import snapshots
from payments.domain.model import Method, Payment, PaymentState, PendingOp
from tests.support.payments_helpers import card_payment

NOW = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)
PRIVATE = {"fingerprint", "payment_method_token", "authorize_key", "capture_key", "void_key"}


def _payment(**changes: object) -> Payment:
    fields: dict[str, object] = {
        "id": "pay_1",
        "branch": TccBranch("gtx-1", "payment"),
        "owner_id": "o",
        "amount_minor": 2500,
        "currency": "USD",
        "method": Method.CARD,
        "provider": "stripe",
        "state": PaymentState.CAPTURED,
        "created_at": NOW,
        "updated_at": NOW + timedelta(seconds=2),
        "fingerprint": "fp",
        "payment_method_token": "pm_card_visa",
        "description": "Job posting",
        "email": "a@example.com",
        "metadata": {"subsystem": "jobs"},
        "captured_minor": 2500,
        "provider_payment_id": "pi_1",
        "authorize_key": "k-a",
        "capture_key": "k-c",
        "capture_amount_minor": 2500,
        "pending_op": PendingOp.CAPTURE,
        "next_poll_at": NOW + timedelta(seconds=30),
        "poll_attempts": 2,
    }
    return Payment(**{**fields, **changes})  # type: ignore[arg-type]


def _as_json(value: object) -> object:
    """What each field must be in the event: dates as ISO text, enums as their value."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def test_every_public_field_of_the_payment_is_written_as_json() -> None:
    for payment in (_payment(), _payment(pending_op=None, next_poll_at=None)):
        written = snapshots.dump(payment, None)["payment"]
        expected = {
            f.name: _as_json(getattr(payment, f.name))
            for f in dataclasses.fields(Payment)
            if f.name not in PRIVATE and f.name != "branch"
        }
        assert written == {**expected, "branch": ["gtx-1", "payment"]}
        assert not any(isinstance(v, enum.Enum | date) for v in written.values())
        assert json.loads(json.dumps(written)) == written


def test_the_payment_is_read_back_as_it_was_written() -> None:
    payment = _payment()
    read, txn = snapshots.load(json.loads(json.dumps(snapshots.dump(payment, None))))
    assert txn is None and read is not None
    # card_payment sets none of the private fields: they are as the class declares them.
    defaults = card_payment("x", "g", at=NOW)
    private_as_default = {name: getattr(defaults, name) for name in PRIVATE}
    assert read == dataclasses.replace(payment, **private_as_default)
