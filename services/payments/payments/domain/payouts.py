"""Payouts (ESC-9): a contractor's payout account at the provider and their withdrawals.

A withdrawal moves available wallet money to the contractor's bank: the wallet holds it (branch
`payout:<id>`, i.e. global transaction `payout`, branch `<id>`; its posting is transfer
`hold/payout/<id>`), the provider sends it (a Connect transfer to the contractor's account, then a
payout to their bank), and the hold is posted (user -> provider clearing) once the payout is paid,
or released when the transfer or the payout fails. The state machine:

    requested -> sending -> in_transit -> paid -> returned  (the bank sent it back: credited back)
         |          |            |
         +----------+------------+-----> failed   (the hold released: the money is back)

`outcome` records what the provider said before the ledger has followed (paid / failed /
returned): a withdrawal reaches `paid` or `failed` only once the wallet has posted or released its
hold, so a crash between the two is finished by the recovery worker. A payout the provider
reported paid can still fail afterwards (Stripe: "some payouts that fail might initially show as
paid, then change to failed" — the bank returned it): the outcome becomes `returned`, the money is
taken back from the contractor's connected account (the transfer reversed) and credited back to
their wallet once (transfer `payout:<id>:returned`, provider clearing -> user), then the
withdrawal is `returned`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from hirepay_platform import money
from hirepay_platform.tcc import TccBranch
from payments.domain import errors

HOLD_GLOBAL_TX = "payout"
# The auditor's finding (OPS-3) for a withdrawal that has not reached a final state in time.
WITHDRAWAL_STUCK = "withdrawal_stuck"
# The wallet keeps a withdrawal's hold at most this long (its maximum): a payout takes days.
HOLD_TTL_SECONDS = 30 * 24 * 3600
MAX_REQUEST_ID_LENGTH = 200


class PayoutAccountState(enum.StrEnum):
    """Whether the provider lets the account receive payouts yet."""

    ONBOARDING = "onboarding"  # the contractor must finish the provider's onboarding
    ACTIVE = "active"  # payouts enabled


@dataclass(slots=True)
class PayoutAccount:
    """A user's account at the payout provider (a Stripe Connect account)."""

    user_id: str
    provider: str
    provider_account_id: str
    state: PayoutAccountState
    onboarding_url: str
    created_at: datetime
    updated_at: datetime

    def refresh(self, payouts_enabled: bool, now: datetime) -> bool:
        """Take the provider's word on payouts; whether the state changed."""
        state = PayoutAccountState.ACTIVE if payouts_enabled else PayoutAccountState.ONBOARDING
        if state is self.state:
            return False
        self.state = state
        self.updated_at = now
        return True


class WithdrawalState(enum.StrEnum):
    REQUESTED = "requested"  # recorded; the wallet hold is being reserved
    SENDING = "sending"  # held; the provider transfer and payout are being created
    IN_TRANSIT = "in_transit"  # the payout is on its way to the bank
    PAID = "paid"  # the bank paid it; the hold is posted
    FAILED = "failed"  # the transfer or payout failed; the hold is released
    RETURNED = "returned"  # paid, then returned by the bank; the money is credited back

    @property
    def final(self) -> bool:
        return self in (WithdrawalState.PAID, WithdrawalState.FAILED, WithdrawalState.RETURNED)


class ProviderOutcome(enum.StrEnum):
    """What the provider said about the money, before the ledger followed."""

    NONE = ""
    PAID = "paid"
    FAILED = "failed"
    RETURNED = "returned"  # reported paid, then failed: the bank sent the money back


@dataclass(frozen=True, slots=True)
class WithdrawalRequest:
    """A validated request: who, how much, and the client's idempotency key."""

    user_id: str
    amount_minor: int
    currency: str
    request_id: str


def validate_request(
    user_id: str, amount_minor: int, currency: str, request_id: str
) -> WithdrawalRequest:
    """VALIDATION_FAILED naming the field, before anything is recorded or called."""
    if not user_id:
        raise errors.invalid("user_id", "is required")
    if not request_id:
        raise errors.invalid("request_id", "is required")
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise errors.invalid("request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} characters")
    money.validate_amount(amount_minor, field="amount_minor")
    money.validate_unit(currency, field="currency", cash_only=True)
    return WithdrawalRequest(user_id, amount_minor, currency, request_id)


@dataclass(slots=True)
class Withdrawal:
    """One withdrawal and how far it got."""

    id: str
    user_id: str
    request_id: str
    amount_minor: int
    currency: str
    provider: str
    provider_account_id: str
    state: WithdrawalState
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    outcome: ProviderOutcome = ProviderOutcome.NONE
    transfer_id: str = ""
    payout_id: str = ""
    reversal_id: str = ""
    failure_code: str = ""
    failure_message: str = ""
    attempts: int = 0
    last_error: str = ""

    @property
    def branch(self) -> TccBranch:
        """The wallet hold's branch (`payout:<id>`)."""
        return TccBranch(HOLD_GLOBAL_TX, self.id)

    def key(self, step: str) -> str:
        """The provider idempotency key of one step: every retry replays the first call."""
        return f"withdrawal:{self.id}:{step}"

    @property
    def final(self) -> bool:
        """Nothing more to do: an outcome the ledger has followed (a paid withdrawal whose
        payout came back is not final until the money is credited back)."""
        return self.state.final and not self.returning

    @property
    def returning(self) -> bool:
        """The payout came back after it was reported paid; the ledger has not followed yet."""
        return (
            self.outcome is ProviderOutcome.RETURNED and self.state is not WithdrawalState.RETURNED
        )

    @property
    def credit_back_transfer_id(self) -> str:
        """The wallet transfer that credits a returned payout back (its idempotency key)."""
        return f"payout:{self.id}:returned"

    def held(self, now: datetime) -> None:
        """The wallet reserved the amount: send it."""
        if self.state is WithdrawalState.REQUESTED:
            self._move(WithdrawalState.SENDING, now)

    def sent(self, transfer_id: str, payout_id: str, now: datetime) -> None:
        """The transfer and the payout exist: wait for the bank."""
        self.transfer_id, self.payout_id = transfer_id, payout_id
        if self.state is WithdrawalState.SENDING:
            self._move(WithdrawalState.IN_TRANSIT, now)

    def provider_paid(self, now: datetime) -> bool:
        """The payout was paid (the ledger follows); False if the outcome was known already."""
        if self.final or self.outcome is not ProviderOutcome.NONE:
            return False
        self.outcome = ProviderOutcome.PAID
        self.updated_at = now
        return True

    def provider_failed(self, code: str, message: str, now: datetime) -> bool:
        """The transfer or the payout failed (the money comes back); False if known already."""
        if self.final or self.outcome is not ProviderOutcome.NONE:
            return False
        self.outcome = ProviderOutcome.FAILED
        self.failure_code = code or "payout_failed"
        self.failure_message = message
        self.updated_at = now
        return True

    def provider_returned(self, code: str, message: str, now: datetime) -> bool:
        """The payout failed after it was reported paid (the money comes back); False unless
        paid was the outcome known so far."""
        if self.outcome is not ProviderOutcome.PAID:
            return False
        self.outcome = ProviderOutcome.RETURNED
        self.failure_code = code or "payout_returned"
        self.failure_message = message
        self.updated_at = now
        return True

    def settled(self, now: datetime) -> None:
        """The ledger followed the provider's outcome: the withdrawal is final."""
        target = {
            ProviderOutcome.PAID: WithdrawalState.PAID,
            ProviderOutcome.FAILED: WithdrawalState.FAILED,
            ProviderOutcome.RETURNED: WithdrawalState.RETURNED,
        }[self.outcome]
        self._move(target, now)

    def retry_later(self, now: datetime, delay: float, error: str) -> None:
        self.attempts += 1
        self.last_error = error[:500]
        self.next_attempt_at = now + timedelta(seconds=delay)

    def _move(self, state: WithdrawalState, now: datetime) -> None:
        self.state = state
        self.updated_at = now
        self.last_error = ""


def stuck_detail(
    w: Withdrawal, now: datetime, *, step_grace: timedelta, transit_grace: timedelta
) -> str:
    """Why a withdrawal counts as stuck ("" when it does not): the money sits held (or, for a
    returned payout, owed back) without moving. A step of ours (requested, sending, a known
    outcome the ledger has not followed, a return not yet credited back) is retried by the
    recovery worker within minutes, so past `step_grace` it keeps failing; a payout in transit
    waits for the bank, which answers within days, so past `transit_grace` it is lost or late."""
    if w.final:
        return ""
    waiting = w.state is WithdrawalState.IN_TRANSIT and w.outcome is ProviderOutcome.NONE
    grace = transit_grace if waiting else step_grace
    age = now - w.updated_at
    if age <= grace:
        return ""
    where = w.state.value + (f"/{w.outcome.value}" if w.outcome.value else "")
    detail = f"{where} for {int(age.total_seconds())} s ({w.amount_minor} {w.currency} held"
    detail += " and owed back)" if w.returning else ")"
    return detail + (f": {w.last_error}" if w.last_error else "")
