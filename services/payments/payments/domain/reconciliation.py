"""Reconciliation with the provider: does a payment's local record match what the provider says?

Plain rules over a payment (and its refunds) and the provider's current view of it (the
consistency auditor, OPS-3).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

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


def mismatch_across(
    before: Payment, intent: ProviderPayment, after: Payment, now: datetime
) -> str | None:
    """What differs between our record and the provider's, given two local reads of the payment:
    `before` made before the provider's read, `after` made after it ("" when they agree; None
    when it cannot be told now: `after` has a provider call in flight, the next round judges).

    A provider call's local record (pending_op) is written before the call, its outcome after the
    answer. So money the provider took that we did not is judged by `after`: a capture the
    provider's read shows was begun before that read, so any later local read shows it (in
    flight, or captured), whereas `before` may predate it (a round reads its payments first and
    each provider later: a capture begun and done in between is no mismatch). Every other
    disagreement (money we took that the provider did not, an amount, an authorization we
    released that it holds) is judged by `before`: our record of those follows the provider's
    answer, so a read before the provider's shows only what the provider had done by then,
    whereas `after` may show a capture made after the provider's read."""
    if in_flight(after):
        return None
    if intent.status is ProviderStatus.CAPTURED and before.state not in TAKEN:
        return provider_mismatch(after, intent, now)
    return provider_mismatch(before, intent, now)


def releasing(intent: ProviderPayment, now: datetime) -> bool:
    """The provider releases this authorization by itself (it has no void) and its time has not
    passed yet: a cancelled payment may read as held until then, never after."""
    return intent.release_due is not None and now < intent.release_due + RELEASE_GRACE


class MismatchKind(enum.StrEnum):
    """What a reconciliation mismatch is about."""

    CHARGE = "charge"  # the money taken (or held) differs
    REFUND = "refund"  # a refund differs: unknown on one side, or another amount or outcome
    # Not a disagreement: its provider has not been readable for longer than the grace.
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class LastCheck:
    """A payment's last completed check by the reconciliation: when, and what it found (kind,
    detail; empty: it agreed). A check whose provider could not be read moves `at` and keeps
    what the check before found (nothing was learnt)."""

    at: datetime
    found: tuple[tuple[MismatchKind, str], ...] = ()
    # Since when its checks have found the provider unreadable (None: the last one read it).
    unreadable_since: datetime | None = None

    @property
    def open(self) -> bool:
        """It found a disagreement, or could not read the provider: checked again every round
        until a check finds it gone (payments 0018)."""
        return bool(self.found) or self.unreadable_since is not None


@dataclass(frozen=True, slots=True)
class SweepCursor:
    """Where the reconciliation's sweep is (payment_reconciliation_sweep; a provider's pass
    through paid purchases: purchase_reconciliation_sweeps): the pass that began
    `pass_started_at` goes through the payments (purchases) changed within the horizon before
    then, in (updated_at, id) order, and has gone past `after` (None: none yet)."""

    pass_started_at: datetime
    after: tuple[datetime, str] | None = None


def sweep_due(
    batch: Sequence[Payment], last: Mapping[str, LastCheck], pass_started_at: datetime
) -> list[Payment]:
    """The payments of a sweep `batch` this round checks: those not checked since the pass began
    (the window may have) and without a provider call in flight (it is about to change: the
    window sees it then, and the next pass)."""
    return [
        p
        for p in batch
        if not in_flight(p) and (p.id not in last or last[p.id].at < pass_started_at)
    ]


class Swept(Protocol):
    """What a sweep's pass goes through in (updated_at, id) order: payments, or paid plan
    purchases (the pass of a provider that sends no refund event)."""

    @property
    def id(self) -> str: ...

    @property
    def updated_at(self) -> datetime: ...


def sweep_advanced(
    cursor: SweepCursor,
    batch: Sequence[Swept],
    done: Set[str],
    full: bool,
    now: datetime,
) -> SweepCursor:
    """The cursor after a round: past the longest run of the `batch` (in cursor order) whose
    payments are `done` (checked, provider read or not, or not due), so a payment the deadline
    left is the next round's first. A `full` batch (as many as asked) may have more behind it;
    one that was not, all done, ends the pass: the next begins `now`."""
    after = cursor.after
    for p in batch:
        if p.id not in done:
            return SweepCursor(cursor.pass_started_at, after)
        after = (p.updated_at, p.id)
    if full:
        return SweepCursor(cursor.pass_started_at, after)
    return SweepCursor(now)


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
