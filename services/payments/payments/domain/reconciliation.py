"""Reconciliation with the provider: does a payment's local record match what the provider says?

Plain rules over a payment (and its refunds) and the provider's current view of it (the
consistency auditor, OPS-3).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from payments.domain.model import TAKEN, Payment, PaymentState
from payments.domain.provider import ProviderPayment, ProviderRefund, ProviderStatus, RefundState
from payments.domain.refunds import Refund, RefundStatus

# How late a provider's own release of an authorization may be before it counts as held.
RELEASE_GRACE = timedelta(hours=6)


def in_flight(payment: Payment) -> bool:
    """A provider call is owed or its outcome unknown: the records may differ for a moment."""
    return payment.pending_op is not None or payment.state is PaymentState.UNKNOWN


def check_order(window: Sequence[Payment], last_checked: Mapping[str, datetime]) -> list[int]:
    """The order in which a round checks the payments of its `window` (given most recently
    changed first), as indexes into it: those never checked first, then the longest unchecked;
    payments alike keep the window's order.

    A round may be cut short by its caller's deadline. Checked in the window's order, the newest
    payments would be checked every round and the oldest never (a deadline too short for the
    whole window, round after round); in this order each round begins with those the previous
    one did not reach, so every payment of a window is checked within about len(window) / (checks
    a round completes) rounds (OPS-3)."""

    def key(i: int) -> tuple[bool, datetime]:
        checked_at = last_checked.get(window[i].id)
        return (checked_at is not None, checked_at or datetime.min)

    return sorted(range(len(window)), key=key)  # stable: ties keep the window's order


def provider_mismatch(payment: Payment, intent: ProviderPayment, now: datetime) -> str:
    """What differs between our record and the provider's ("" when they agree)."""
    taken_there = intent.status is ProviderStatus.CAPTURED
    taken_here = payment.state in TAKEN
    if taken_there and not taken_here:
        return f"provider captured {intent.amount_received}, local state {payment.state.value}"
    if taken_here and not taken_there:
        return (
            f"local {payment.state.value} {payment.captured_minor}, provider {intent.status.value}"
        )
    if taken_here and intent.amount_received != payment.captured_minor:
        return f"provider captured {intent.amount_received}, local {payment.captured_minor}"
    held_there = intent.status is ProviderStatus.AUTHORIZED
    if held_there and payment.state in (PaymentState.VOIDED, PaymentState.FAILED):
        if releasing(intent, now):
            return ""
        return f"provider still holds {intent.amount_capturable}, local {payment.state.value}"
    return ""


def releasing(intent: ProviderPayment, now: datetime) -> bool:
    """The provider releases this authorization by itself (it has no void) and its time has not
    passed yet: a cancelled payment may read as held until then, never after."""
    return intent.release_due is not None and now < intent.release_due + RELEASE_GRACE


class MismatchKind(enum.StrEnum):
    """What a reconciliation mismatch is about."""

    CHARGE = "charge"  # the money taken (or held) differs
    REFUND = "refund"  # a refund differs: unknown on one side, or another amount or outcome


@dataclass(frozen=True, slots=True)
class LastCheck:
    """A payment's last completed check by the reconciliation: when, and what it found (kind,
    detail; empty: it agreed). A check whose provider could not be read moves `at` and keeps
    what the check before found (nothing was learnt)."""

    at: datetime
    found: tuple[tuple[MismatchKind, str], ...] = ()


def refunds_in_flight(local: Sequence[Refund]) -> bool:
    """A refund is asked of the provider and its answer not recorded yet: skip this round."""
    return any(r.status is RefundStatus.PENDING and not r.provider_refund_id for r in local)


def refund_mismatches(local: Sequence[Refund], remote: Sequence[ProviderRefund]) -> list[str]:
    """Each provider refund must be one of our refund records (same id and amount, and the same
    outcome once both sides are final), and each refund we recorded as succeeded must exist at
    the provider. A refund still pending on either side is not judged by its outcome yet."""
    found: list[str] = []
    ours = {r.provider_refund_id: r for r in local if r.provider_refund_id}
    theirs = {r.id: r for r in remote}
    for refund in remote:
        mine = ours.get(refund.id)
        if mine is None:
            if refund.state is not RefundState.FAILED:
                found.append(
                    f"provider refund {refund.id} of {refund.amount_minor} "
                    f"({refund.state.value}) has no local record"
                )
            continue
        if mine.amount_minor != refund.amount_minor:
            found.append(
                f"refund {mine.id}: provider {refund.id} of {refund.amount_minor}, "
                f"local {mine.amount_minor}"
            )
        elif _outcomes_differ(mine.status, refund.state):
            found.append(
                f"refund {mine.id}: provider {refund.id} {refund.state.value}, "
                f"local {mine.status.value}"
            )
    for mine in ours.values():
        if mine.provider_refund_id not in theirs and mine.status is RefundStatus.SUCCEEDED:
            found.append(
                f"refund {mine.id} of {mine.amount_minor} succeeded locally, "
                f"provider has no refund {mine.provider_refund_id}"
            )
    return found


def _outcomes_differ(local: RefundStatus, remote: RefundState) -> bool:
    if local is RefundStatus.PENDING or remote is RefundState.PENDING:
        return False
    return (local is RefundStatus.SUCCEEDED) != (remote is RefundState.SUCCEEDED)
