"""JSON snapshots of payments and transactions as they were when a settlement event was written."""

from __future__ import annotations

import enum
import typing
from datetime import date, datetime
from operator import attrgetter
from typing import Any

from hirepay_platform.tcc import TccBranch
from payments.domain.model import METHOD_OF, PENDING_OP_OF, STATE_OF, Payment
from payments.domain.payouts import ProviderOutcome, Withdrawal, WithdrawalState
from payments.domain.transactions import Transaction, TxnStatus, UserType

# Internal bookkeeping (keys, tokens, fingerprints) stays out of published events.
_PAYMENT_PRIVATE = {
    "fingerprint",
    "payment_method_token",
    "authorize_key",
    "capture_key",
    "void_key",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return value


def _of_kind(cls: type, names: tuple[str, ...], kind: type) -> tuple[str, ...]:
    """The fields among `names` whose declared type is (or may be) a `kind`."""
    hints = typing.get_type_hints(cls)
    return tuple(
        name
        for name in names
        if any(
            isinstance(t, type) and issubclass(t, kind)
            for t in (typing.get_args(hints[name]) or (hints[name],))
        )
    )


# A payment's published fields, read at once, and those that need converting, found once from
# the field types: per field, _jsonable cost a call, an isinstance and a hasattr (two more calls
# for an enum's value), on every settlement event written (issue 13).
_PAYMENT_PUBLIC: tuple[str, ...] = tuple(
    name
    for name in Payment.__slots__  # type: ignore[attr-defined]
    if name not in _PAYMENT_PRIVATE and name != "branch"
)
_read_payment = attrgetter(*_PAYMENT_PUBLIC)
_PAYMENT_DATES = _of_kind(Payment, _PAYMENT_PUBLIC, date)
_PAYMENT_ENUMS = _of_kind(Payment, _PAYMENT_PUBLIC, enum.Enum)


def _dump_payment(payment: Payment) -> dict[str, Any]:
    p = dict(zip(_PAYMENT_PUBLIC, _read_payment(payment), strict=True))
    for name in _PAYMENT_DATES:
        if p[name] is not None:
            p[name] = p[name].isoformat()
    for name in _PAYMENT_ENUMS:
        if p[name] is not None:
            p[name] = str(p[name])  # a StrEnum's value (model.METHOD_OF)
    p["branch"] = [payment.branch.global_tx_id, payment.branch.branch_id]
    return p


def dump(payment: Payment | None, txn: Transaction | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if payment is not None:
        out["payment"] = _dump_payment(payment)
    if txn is not None:
        out["transaction"] = {
            name: _jsonable(getattr(txn, name))
            for name in Transaction.__slots__  # type: ignore[attr-defined]
            if name not in ("checkout_key", "expire_key")
        }
        out["transaction"]["metadata"] = {
            k: v for k, v in txn.metadata.items() if k != "fingerprint"
        }
    return out


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _d(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def load(snapshot: dict[str, Any]) -> tuple[Payment | None, Transaction | None]:
    payment = txn = None
    if "payment" in snapshot:
        p = dict(snapshot["payment"])
        g, b = p.pop("branch")
        # The dates parsed in line, as _dt parses them: every settlement event the stream sends
        # and every callback decodes a payment's three (three Python calls per event, issue 13).
        created, updated, poll = p["created_at"], p["updated_at"], p.get("next_poll_at")
        payment = Payment(
            **{
                **p,
                "branch": TccBranch(g, b),
                "method": METHOD_OF[p["method"]],
                "state": STATE_OF[p["state"]],
                "pending_op": PENDING_OP_OF[p["pending_op"]] if p.get("pending_op") else None,
                "created_at": datetime.fromisoformat(created) if created else None,
                "updated_at": datetime.fromisoformat(updated) if updated else None,
                "next_poll_at": datetime.fromisoformat(poll) if poll else None,
            }
        )
    if "transaction" in snapshot:
        x = dict(snapshot["transaction"])
        txn = Transaction(
            **{
                **x,
                "status": TxnStatus(x["status"]),
                "user_type": UserType(x["user_type"]),
                "created_at": _dt(x["created_at"]),
                "updated_at": _dt(x["updated_at"]),
                "expires_at": _dt(x.get("expires_at")),
                "subscription_start": _d(x.get("subscription_start")),
                "subscription_end": _d(x.get("subscription_end")),
            }
        )
    return payment, txn


_WITHDRAWAL_DATES = ("created_at", "updated_at", "next_attempt_at")
# Internal bookkeeping of a withdrawal stays out of published events.
_WITHDRAWAL_PRIVATE = ("attempts", "last_error")


def dump_withdrawal(withdrawal: Withdrawal) -> dict[str, Any]:
    return {
        name: _jsonable(getattr(withdrawal, name))
        for name in Withdrawal.__slots__  # type: ignore[attr-defined]
        if name not in _WITHDRAWAL_PRIVATE
    }


def load_withdrawal(snapshot: dict[str, Any]) -> Withdrawal | None:
    if "withdrawal" not in snapshot:
        return None
    w = dict(snapshot["withdrawal"])
    return Withdrawal(
        **{
            **w,
            **{name: _dt(w.get(name)) for name in _WITHDRAWAL_DATES},
            "state": WithdrawalState(w["state"]),
            "outcome": ProviderOutcome(w["outcome"]),
        }
    )
