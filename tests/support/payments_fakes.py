"""In-memory fakes of the payments unit of work and of the provider, for handler unit tests.

The fake unit of work keeps a committed state and gives each `async with` a private copy, so a
handler that raises (or never commits) leaves nothing behind, as a real transaction would.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hirepay_platform.errors import HirepayError, PreconditionFailed, StaleRow
from hirepay_platform.reasons import FailureReason
from hirepay_platform.tcc import TccBranch
from payments.domain.credits import CREDIT_UNITS, CreditGrant, GrantKind, GrantStatus
from payments.domain.disputes import Dispute, ProviderDispute
from payments.domain.events import AuditEntry, OutboxEvent
from payments.domain.ledger import Account, ExpectedBooking
from payments.domain.model import Payment
from payments.domain.provider import (
    AuthorizeRequest,
    CheckoutRequest,
    CheckoutReturn,
    CheckoutState,
    Declined,
    InvalidRequest,
    OutcomeUnknown,
    ProviderCheckout,
    ProviderErrorInfo,
    ProviderEvent,
    ProviderPayment,
    ProviderRefund,
    ProviderStatus,
    RefundState,
    SignatureInvalid,
)
from payments.domain.reconciliation import LastCheck, MismatchKind, SweepCursor
from payments.domain.refunds import Refund, RefundStatus
from payments.domain.transactions import Transaction, TxnStatus, UserType
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.ports import EventRecord, FirstLook, HorizonSample
from payments.service_layer.providers import ProviderRegistry
from tests.support.barrier_fakes import BarrierRows, MemoryBarriers


@dataclass
class State:
    payments: dict[str, Payment] = field(default_factory=dict)
    barriers: BarrierRows = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    transactions: dict[str, Transaction] = field(default_factory=dict)
    events: dict[str, bool] = field(default_factory=dict)  # event id -> applied
    outbox: list[OutboxEvent] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    grants: dict[str, CreditGrant] = field(default_factory=dict)
    reconciled: dict[str, LastCheck] = field(default_factory=dict)  # payment id -> its last check
    sweep: SweepCursor | None = None  # the reconciliation sweep's cursor
    # The passes through paid purchases, by provider (purchase_reconciliation_sweeps).
    purchase_sweeps: dict[str, SweepCursor] = field(default_factory=dict)
    disputes: dict[str, Dispute] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 10, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class _Repo:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self.uow = uow

    @property
    def st(self) -> State:
        return self.uow.working


class FakePayments(_Repo):
    async def add(self, payment: Payment) -> None:
        self.st.payments[payment.id] = copy.deepcopy(payment)

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        return copy.deepcopy(self.st.payments.get(payment_id))

    async def get_by_branch(self, branch: TccBranch, *, for_update: bool = False) -> Payment | None:
        for p in self.st.payments.values():
            if p.branch == branch:
                return copy.deepcopy(p)
        return None

    async def find_by_provider(
        self, *, payment_intent_id: str = "", checkout_id: str = ""
    ) -> Payment | None:
        for p in self.st.payments.values():
            if payment_intent_id and p.provider_payment_id == payment_intent_id:
                return copy.deepcopy(p)
            if checkout_id and p.provider_checkout_id == checkout_id:
                return copy.deepcopy(p)
        return None

    async def save(self, payment: Payment) -> None:
        self.st.payments[payment.id] = copy.deepcopy(payment)

    def assume(self, payment: Payment, *, guard: bool = True) -> Payment:
        """As the real repository: not read; the commit applies only if it is still so (also
        with guard=False: the other guard checks `stored_as`, which the commit does here)."""
        self.uow.assumed[payment.id] = copy.deepcopy(payment)
        return copy.deepcopy(payment)

    def stored_as(self, payment: Payment) -> object:
        return ("stored_as", payment.id)

    async def list_by_states(
        self,
        states: frozenset[str],
        subsystem: str,
        after_id: str,
        limit: int,
        global_tx_ids: frozenset[str] = frozenset(),
        updated_since: datetime | None = None,
    ) -> list[Payment]:
        found = [
            p
            for p in self.st.payments.values()
            if p.id > after_id
            and (not global_tx_ids or p.branch.global_tx_id in global_tx_ids)
            and (updated_since is None or p.updated_at >= updated_since)
            and (not states or p.state.value in states)
            and (not subsystem or p.metadata.get("subsystem") == subsystem)
        ]
        return sorted(found, key=lambda p: p.id)[:limit]

    async def recently_changed(self, limit: int) -> list[Payment]:
        return sorted(self.st.payments.values(), key=lambda p: p.updated_at, reverse=True)[:limit]

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Payment]:
        due = [p for p in self.st.payments.values() if p.next_poll_at and p.next_poll_at <= now]
        for p in due[:limit]:
            p.next_poll_at = now + timedelta(seconds=lease_seconds)
        return [copy.deepcopy(p) for p in due[:limit]]


class FakeReconciliations(_Repo):
    async def last_checks(self, payment_ids: Sequence[str]) -> dict[str, LastCheck]:
        return {p: self.st.reconciled[p] for p in payment_ids if p in self.st.reconciled}

    async def record_checks(
        self, found: Mapping[str, Sequence[tuple[MismatchKind, str]] | None], at: datetime
    ) -> None:
        for payment_id, what in found.items():
            before = self.st.reconciled.get(payment_id, LastCheck(at))
            if what is None:
                since = before.unreadable_since or at
                self.st.reconciled[payment_id] = LastCheck(at, before.found, since)
            else:
                self.st.reconciled[payment_id] = LastCheck(at, tuple(what))

    async def forget_before(self, before: datetime, limit: int) -> int:
        old = sorted(
            (c.at, p) for p, c in self.st.reconciled.items() if c.at < before and not c.open
        )[:limit]
        for _, payment_id in old:
            del self.st.reconciled[payment_id]
        return len(old)

    async def last_and_open_checks(
        self, payment_ids: Sequence[str], limit: int
    ) -> dict[str, LastCheck]:
        records = sorted((c.at, p) for p, c in self.st.reconciled.items() if c.open)[:limit]
        wanted = {*payment_ids, *(p for _, p in records)}
        return {p: self.st.reconciled[p] for p in sorted(wanted) if p in self.st.reconciled}

    async def payments(self, payment_ids: Sequence[str]) -> list[Payment]:
        ids = sorted(p for p in payment_ids if p in self.st.payments)
        return [copy.deepcopy(self.st.payments[p]) for p in ids]

    async def sweep_cursor(self) -> SweepCursor | None:
        return self.st.sweep

    async def sweep_batch(
        self, cursor: SweepCursor, horizon: timedelta, limit: int
    ) -> list[Payment]:
        since = cursor.pass_started_at - horizon
        after = cursor.after or (since, "")
        found = sorted(
            (
                p
                for p in self.st.payments.values()
                if p.provider_payment_id
                and since <= p.updated_at < cursor.pass_started_at
                and (p.updated_at, p.id) > after
            ),
            key=lambda p: (p.updated_at, p.id),
        )
        return [copy.deepcopy(p) for p in found[:limit]]

    async def save_sweep(self, cursor: SweepCursor) -> None:
        self.st.sweep = cursor

    async def purchase_sweeps(self, providers: Sequence[str]) -> dict[str, SweepCursor]:
        return {p: c for p, c in self.st.purchase_sweeps.items() if p in providers}

    async def save_purchase_sweep(self, provider: str, cursor: SweepCursor) -> bool:
        def place(c: SweepCursor) -> tuple[datetime, datetime, str]:
            after_at, after_id = c.after or (datetime.min.replace(tzinfo=UTC), "")
            return c.pass_started_at, after_at, after_id

        stored = self.st.purchase_sweeps.get(provider)
        if stored is not None and place(stored) >= place(cursor):
            return False
        self.st.purchase_sweeps[provider] = cursor
        return True


class FakeRefunds(_Repo):
    async def add(self, refund: Refund) -> None:
        self.st.refunds[refund.id] = copy.deepcopy(refund)

    async def get(self, refund_id: str, *, for_update: bool = False) -> Refund | None:
        return copy.deepcopy(self.st.refunds.get(refund_id))

    async def get_by_request(self, payment_id: str, request_id: str) -> Refund | None:
        for r in self.st.refunds.values():
            if (r.payment_id, r.request_id) == (payment_id, request_id):
                return copy.deepcopy(r)
        return None

    async def save(self, refund: Refund) -> None:
        self.st.refunds[refund.id] = copy.deepcopy(refund)

    async def succeeded_total(self, payment_id: str) -> int:
        return sum(
            r.amount_minor
            for r in self.st.refunds.values()
            if r.payment_id == payment_id and r.status is RefundStatus.SUCCEEDED
        )

    async def list_for_payment(self, payment_id: str) -> list[Refund]:
        found = [r for r in self.st.refunds.values() if r.payment_id == payment_id]
        return [copy.deepcopy(r) for r in sorted(found, key=lambda r: (r.created_at, r.id))]

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Refund]:
        due = [
            r
            for r in self.st.refunds.values()
            if (r.status is RefundStatus.PENDING or r.coins_owed)
            and r.next_poll_at
            and r.next_poll_at <= now
        ]
        for r in due:
            r.next_poll_at = now + timedelta(seconds=lease_seconds)
        return [copy.deepcopy(r) for r in due[:limit]]


class FakeTransactions(_Repo):
    async def add(self, txn: Transaction) -> None:
        self.st.transactions[txn.id] = copy.deepcopy(txn)

    async def get(self, transaction_id: str, *, for_update: bool = False) -> Transaction | None:
        return copy.deepcopy(self.st.transactions.get(transaction_id))

    async def get_by_request(
        self, user_type: UserType, user_id: str, request_id: str
    ) -> Transaction | None:
        for x in self.st.transactions.values():
            if (x.user_type, x.user_id, x.request_id) == (user_type, user_id, request_id):
                return copy.deepcopy(x)
        return None

    async def find_by_provider(
        self, *, checkout_id: str = "", payment_intent_id: str = ""
    ) -> Transaction | None:
        for x in self.st.transactions.values():
            if checkout_id and x.provider_transaction_id == checkout_id:
                return copy.deepcopy(x)
            if payment_intent_id and x.provider_payment_intent_id == payment_intent_id:
                return copy.deepcopy(x)
        return None

    async def lock_user(self, user_type: UserType, user_id: str) -> None:
        return None

    async def latest_active(
        self, user_type: UserType, user_id: str, today: date
    ) -> Transaction | None:
        active = [
            x
            for x in self.st.transactions.values()
            if (x.user_type, x.user_id) == (user_type, user_id)
            and x.status is TxnStatus.SUCCESS
            and x.subscription_end is not None
            and x.subscription_end > today
        ]
        return copy.deepcopy(max(active, key=lambda x: x.subscription_end)) if active else None

    async def save(self, txn: Transaction) -> None:
        self.st.transactions[txn.id] = copy.deepcopy(txn)

    async def list_stale_pending(self, now: datetime, limit: int) -> list[Transaction]:
        return []

    async def paid_since(
        self,
        providers: Sequence[str],
        since: datetime,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
        before: datetime | None = None,
        newest: bool = False,
    ) -> list[Transaction]:
        paid = sorted(
            (
                x
                for x in self.st.transactions.values()
                if x.status is TxnStatus.SUCCESS
                and x.provider in providers
                and x.provider_payment_intent_id
                and x.updated_at >= since
                and (before is None or x.updated_at < before)
                and (after is None or (x.updated_at, x.id) > after)
            ),
            key=lambda x: (x.updated_at, x.id),
            reverse=newest,
        )
        return [copy.deepcopy(x) for x in paid[: max(limit, 0)]]


class FakeEvents(_Repo):
    async def exists(self, event_id: str) -> bool:
        return event_id in self.st.events

    async def add(self, *, event_id: str, applied: bool, **_: Any) -> bool:
        if event_id in self.st.events:
            return False
        self.st.events[event_id] = applied
        return True

    async def claim(self, record: EventRecord) -> bool:
        if self.st.events.get(record.event_id):
            return False
        self.st.events[record.event_id] = True
        return True

    async def store_first(self, record: EventRecord, *, by_checkout: bool, ours: str) -> FirstLook:
        payments = self.uow.payments
        if by_checkout:
            payment = await payments.find_by_provider(checkout_id=record.object_id)
        else:
            payment = await payments.find_by_provider(payment_intent_id=record.object_id)
        if payment is None and ours:
            payment = await payments.get(ours)
        if payment is None:
            return FirstLook(payment=None, stored=False, applied_before=False)
        applied_before = self.st.events.get(record.event_id, False)
        stored = await self.add(event_id=record.event_id, applied=False)
        return FirstLook(payment=payment, stored=stored, applied_before=applied_before)


class FakeOutbox(_Repo):
    async def add(self, event: OutboxEvent, *, callback: bool) -> None:
        cursor = len(self.st.outbox) + 1
        self.st.outbox.append(
            replace(
                event,
                cursor=cursor,
                payment=copy.deepcopy(event.payment),
                transaction=copy.deepcopy(event.transaction),
            )
        )

    async def list_after(self, cursor: int, limit: int, subsystem: str = "") -> list[OutboxEvent]:
        return [
            e
            for e in self.st.outbox
            if e.cursor > cursor and (not subsystem or e.subsystem == subsystem)
        ][:limit]

    async def backlog(self) -> int:
        return 0

    async def horizon(self) -> HorizonSample:
        # One unit of work at a time here: no transaction ever holds the stream back.
        return HorizonSample(datetime.now(UTC), None, frozenset(), None)


class FakeAudit(_Repo):
    async def add(self, *entries: AuditEntry) -> None:
        for entry in entries:
            self.st.audit.append(replace(entry, id=len(self.st.audit) + 1))

    async def list_for_payment(self, payment_id: str) -> list[AuditEntry]:
        return [a for a in self.st.audit if a.payment_id == payment_id]

    async def list_for_transaction(self, transaction_id: str) -> list[AuditEntry]:
        return [a for a in self.st.audit if a.transaction_id == transaction_id]


class FakeCreditGrants(_Repo):
    async def add(self, grant: CreditGrant) -> bool:
        if grant.id in self.st.grants:
            return False
        self.st.grants[grant.id] = copy.deepcopy(grant)
        return True

    async def owe(self, grant: CreditGrant) -> None:
        await self.add(grant)

    async def get(self, grant_id: str, *, for_update: bool = False) -> CreditGrant | None:
        return copy.deepcopy(self.st.grants.get(grant_id))

    async def for_transaction(self, transaction_id: str) -> list[CreditGrant]:
        # A payment's bookings have no transaction: none is "of" the empty one (as in SQL).
        found = [
            g
            for g in self.st.grants.values()
            if g.transaction_id and g.transaction_id == transaction_id
        ]
        return copy.deepcopy(found)

    async def for_payment(self, payment_id: str) -> list[CreditGrant]:
        found = [g for g in self.st.grants.values() if g.payment_id == payment_id]
        return copy.deepcopy(found)

    async def expected(
        self, before: datetime, since: datetime | None = None
    ) -> list[ExpectedBooking]:
        raise NotImplementedError("the auditor's read runs against PostgreSQL")

    async def save(self, grant: CreditGrant, *, release_lease: bool = False) -> None:
        # The fake's lease is next_attempt_at itself (lease_due): a retry's save replaces it.
        self.st.grants[grant.id] = copy.deepcopy(grant)

    async def mark_done(self, grants: list[CreditGrant], now: datetime) -> list[CreditGrant]:
        done = []
        for given in grants:
            grant = self.st.grants.get(given.id)
            if grant is not None and grant.status is GrantStatus.PENDING:
                grant.done(now)
                given.done(now)
                done.append(given)
        return done

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[CreditGrant]:
        due = [
            g
            for g in self.st.grants.values()
            if g.status is GrantStatus.PENDING and g.next_attempt_at <= now
        ][:limit]
        for g in due:
            g.next_attempt_at = now + timedelta(seconds=lease_seconds)
        return copy.deepcopy(due)


class FakeDisputes(_Repo):
    async def add(self, dispute: Dispute) -> bool:
        if dispute.id in self.st.disputes:
            return False
        self.st.disputes[dispute.id] = copy.deepcopy(dispute)
        return True

    async def get(self, dispute_id: str, *, for_update: bool = False) -> Dispute | None:
        return copy.deepcopy(self.st.disputes.get(dispute_id))

    async def save(self, dispute: Dispute) -> None:
        self.st.disputes[dispute.id] = copy.deepcopy(dispute)

    async def for_payment(self, payment_id: str) -> list[Dispute]:
        found = [d for d in self.st.disputes.values() if d.payment_id == payment_id]
        return copy.deepcopy(sorted(found, key=lambda d: (d.created_at, d.id)))


class LedgerInsufficientFunds(PreconditionFailed):
    """The wallet's refusal of a debit below zero, as the client raises it."""

    reason = FailureReason.INSUFFICIENT_FUNDS


class LedgerHoldCancelled(PreconditionFailed):
    """The wallet's refusal of a Try whose branch was cancelled first (a hanging Try)."""

    reason = FailureReason.HOLD_CANCELLED


class FakeLedger:
    """The wallet's ledger for plan credits: balances per (owner, unit), transfers once by id,
    never below zero for users; `fail` makes the next calls raise (the wallet down)."""

    def __init__(self) -> None:
        self.balances: dict[tuple[str, str], int] = {}
        self.transfers: dict[str, dict[str, int]] = {}
        self.fail: list[Exception] = []
        # Coin holds of refunds by refund id: [owner, coins, "held" | "posted" | "released"].
        self.coin_holds: dict[str, list[Any]] = {}

    def coins_available(self, owner: str) -> int:
        held = sum(h[1] for h in self.coin_holds.values() if h[0] == owner and h[2] == "held")
        return self.balances.get((owner, "COIN"), 0) - held

    async def hold_coins(self, refund: Refund, owner_id: str) -> None:
        if self.fail:
            raise self.fail.pop(0)
        hold = self.coin_holds.get(refund.id)
        if hold is not None:
            if hold[2] == "released" and hold[1] == 0:
                raise LedgerHoldCancelled("the branch was cancelled before its Try")
            return  # replayed
        if self.coins_available(owner_id) < refund.coins:
            raise LedgerInsufficientFunds("COIN balance too low")
        self.coin_holds[refund.id] = [owner_id, refund.coins, "held"]

    async def take_coins(self, refund: Refund) -> None:
        if self.fail:
            raise self.fail.pop(0)
        hold = self.coin_holds[refund.id]
        if hold[2] == "held":
            self.balances[(hold[0], "COIN")] -= hold[1]
            key = ("platform", "COIN")
            self.balances[key] = self.balances.get(key, 0) + hold[1]
            hold[2] = "posted"

    async def return_coins(self, refund: Refund, reason: str) -> None:
        if self.fail:
            raise self.fail.pop(0)
        hold = self.coin_holds.setdefault(refund.id, ["", 0, "released"])  # null compensation
        if hold[2] == "held":
            hold[2] = "released"

    async def move(self, grant: CreditGrant, amounts: dict[str, int]) -> None:
        if self.fail:
            raise self.fail.pop(0)
        if grant.transfer_id in self.transfers:
            return  # replayed: moves nothing
        sign = 1 if grant.kind is GrantKind.ISSUE else -1
        owner_of = {unit: grant.user_id if unit in CREDIT_UNITS else "platform" for unit in amounts}
        for unit, n in amounts.items():
            too_low = self.balances.get((owner_of[unit], unit), 0) < n
            if sign < 0 and unit in CREDIT_UNITS and too_low:
                raise LedgerInsufficientFunds(f"{unit} balance too low")
        for unit, n in amounts.items():
            key = (owner_of[unit], unit)
            self.balances[key] = self.balances.get(key, 0) + sign * n
        self.transfers[grant.transfer_id] = dict(amounts)

    async def move_many(self, grants: list[CreditGrant]) -> list[HirepayError | None]:
        """Payments' bookings: each leg moves its amount between (owner, unit) balances."""
        if self.fail:
            raise self.fail.pop(0)
        for grant in grants:
            if grant.transfer_id in self.transfers:
                continue
            for leg in grant.legs_for(grant.amounts or {}):
                for account, sign in ((leg.source, -1), (leg.target, 1)):
                    key = (account.owner, account.unit)
                    self.balances[key] = self.balances.get(key, 0) + sign * leg.amount
            self.transfers[grant.transfer_id] = dict(grant.amounts or {})
        return [None] * len(grants)

    async def account_id(self, account: Account) -> str:
        return f"acct:{account.owner}:{account.unit}:{account.kind.value}"

    async def existing_account_id(self, account: Account) -> str:
        return ""

    async def transfer_entries(self, transfer_ids: Sequence[str]) -> list[tuple[str, str, int]]:
        return []

    async def available(self, user_id: str) -> dict[str, int]:
        if self.fail:
            raise self.fail.pop(0)
        return {unit: self.balances.get((user_id, unit), 0) for unit in CREDIT_UNITS}

    def spend(self, user_id: str, unit: str, n: int) -> None:
        self.balances[(user_id, unit)] -= n


class FakeUnitOfWork:
    def __init__(self) -> None:
        self.committed = State()
        self.working = State()
        self.payments = FakePayments(self)
        self.barriers = MemoryBarriers(lambda: self.working.barriers)
        self.refunds = FakeRefunds(self)
        self.transactions = FakeTransactions(self)
        self.events = FakeEvents(self)
        self.outbox = FakeOutbox(self)
        self.audit = FakeAudit(self)
        self.credit_grants = FakeCreditGrants(self)
        self.reconciliations = FakeReconciliations(self)
        self.disputes = FakeDisputes(self)

    async def __aenter__(self) -> FakeUnitOfWork:
        self.working = copy.deepcopy(self.committed)
        self.assumed: dict[str, Payment] = {}  # payments.assume(): as the caller last saw them
        self.actions: list[Callable[[], None]] = []
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.working = State()

    async def autocommit(self) -> None:
        """Real statements commit one by one; here the unit of work's commit() still applies."""

    async def commit(self) -> None:
        for payment_id, assumed in self.assumed.items():
            if self.committed.payments.get(payment_id) != assumed:
                raise StaleRow(f"payment {payment_id} changed since it was assumed")
        self.committed = copy.deepcopy(self.working)
        actions, self.actions = self.actions, []
        for action in actions:
            action()

    def after_commit(self, action: Callable[[], None]) -> None:
        self.actions.append(action)


class Crash(BaseException):
    """The process dies here (not an exception any handler catches)."""


DECLINES = {
    "pm_card_chargeDeclined": ProviderErrorInfo("card_declined", "generic_decline", "declined"),
    "pm_card_chargeDeclinedInsufficientFunds": ProviderErrorInfo(
        "card_declined", "insufficient_funds", "insufficient funds"
    ),
}


class FakeProvider:
    """A Stripe-like provider with idempotency keys and scripted failures.

    `script` holds what the next calls do: an exception to raise before doing anything, `Crash()`
    to die before the call, or ("after", exc) to perform the call and then raise `exc`."""

    name = "stripe"
    # Stripe-like: refunds made at it arrive by event (a subclass sets False for Fatora-like).
    refunds_by_event = True

    def accepts_payment_method(self, token: str) -> bool:
        return token.startswith("pm_")

    def __init__(self) -> None:
        self.intents: dict[str, ProviderPayment] = {}
        self.saved: dict[str, Any] = {}
        self.script: list[Any] = []
        self.calls: list[tuple[str, str]] = []
        self.refunded: dict[str, int] = {}
        # Every refund made at this provider, per payment (reconciliation lists them).
        self.refunds: dict[str, list[ProviderRefund]] = {}
        self._ids = itertools.count(1)

    def _next(self) -> Any:
        return self.script.pop(0) if self.script else None

    def forget(self, intent_id: str) -> None:
        """The provider loses the intent (e.g. after an incident): it answers 404 from now on."""
        del self.intents[intent_id]

    def _intent(self, intent_id: str) -> ProviderPayment:
        if intent_id not in self.intents:
            raise InvalidRequest(
                f"No such payment_intent: '{intent_id}'", code="resource_missing", status=404
            )
        return self.intents[intent_id]

    async def _idempotent(self, op: str, key: str, fn: Any) -> Any:
        self.calls.append((op, key))
        step = self._next()
        if isinstance(step, BaseException):
            raise step
        if key and key in self.saved:
            result = self.saved[key]
        else:
            try:
                result = fn()
            except (Declined, InvalidRequest) as exc:
                result = exc
            if key:
                self.saved[key] = result
        if isinstance(step, tuple) and step[0] == "after":
            raise step[1]
        if isinstance(result, BaseException):
            raise result
        return result

    async def create_customer(self, email: str, idempotency_key: str) -> str:
        return await self._idempotent("customer", idempotency_key, lambda: f"cus_{next(self._ids)}")

    async def authorize(self, request: AuthorizeRequest, idempotency_key: str) -> ProviderPayment:
        def create() -> ProviderPayment:
            pid = f"pi_{next(self._ids)}"
            if request.payment_method in DECLINES:
                self.intents[pid] = ProviderPayment(
                    pid,
                    ProviderStatus.FAILED,
                    request.amount_minor,
                    request.currency,
                    last_error=DECLINES[request.payment_method],
                    metadata=request.metadata,
                )
                raise Declined(DECLINES[request.payment_method], pid)
            if not request.payment_method.startswith("pm_card"):
                raise InvalidRequest(
                    "No such PaymentMethod", code="resource_missing", param="payment_method"
                )
            intent = ProviderPayment(
                pid,
                ProviderStatus.AUTHORIZED,
                request.amount_minor,
                request.currency,
                amount_capturable=request.amount_minor,
                metadata=request.metadata,
            )
            self.intents[pid] = intent
            return intent

        return await self._idempotent("authorize", idempotency_key, create)

    async def capture(
        self, intent_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPayment:
        def run() -> ProviderPayment:
            pi = self._intent(intent_id)
            if pi.status is not ProviderStatus.AUTHORIZED:
                raise InvalidRequest("cannot capture", code="payment_intent_unexpected_state")
            pi = replace(
                pi,
                status=ProviderStatus.CAPTURED,
                amount_received=amount_minor or pi.amount_minor,
                amount_capturable=0,
            )
            self.intents[intent_id] = pi
            return pi

        return await self._idempotent("capture", idempotency_key, run)

    async def cancel(self, intent_id: str, idempotency_key: str) -> ProviderPayment:
        def run() -> ProviderPayment:
            pi = self._intent(intent_id)
            if pi.status is ProviderStatus.CAPTURED:
                raise InvalidRequest("cannot cancel", code="payment_intent_unexpected_state")
            pi = replace(pi, status=ProviderStatus.CANCELED, amount_capturable=0)
            self.intents[intent_id] = pi
            return pi

        return await self._idempotent("cancel", idempotency_key, run)

    async def refund(
        self,
        intent_id: str,
        amount_minor: int,
        reason: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderRefund:
        def run() -> ProviderRefund:
            pi = self.intents[intent_id]
            done = self.refunded.get(intent_id, 0)
            if done + amount_minor > pi.amount_received:
                raise InvalidRequest(
                    "Refund amount exceeds the amount captured", code="amount_too_large"
                )
            self.refunded[intent_id] = done + amount_minor
            made = ProviderRefund(
                f"re_{next(self._ids)}",
                RefundState.SUCCEEDED,
                amount_minor,
                reason=reason,
                metadata=dict(metadata),
            )
            self.refunds.setdefault(intent_id, []).append(made)
            return made

        return await self._idempotent("refund", idempotency_key, run)

    def refund_outside(self, intent_id: str, amount_minor: int, reason: str = "") -> str:
        """A refund made at the provider, not through Hirepay (its dashboard): no metadata."""
        pi = self.intents[intent_id]
        done = self.refunded.get(intent_id, 0)
        assert done + amount_minor <= pi.amount_received, "the provider refuses it"
        self.refunded[intent_id] = done + amount_minor
        made = ProviderRefund(f"re_{next(self._ids)}", RefundState.SUCCEEDED, amount_minor, reason)
        self.refunds.setdefault(intent_id, []).append(made)
        return made.id

    def fail_refund(self, intent_id: str, refund_id: str, reason: str) -> None:
        """A refund that succeeded fails at the provider since (Stripe: succeeded -> failed,
        the card closed): its money is the merchant's again."""
        found = self.refunds[intent_id]
        [index] = [i for i, r in enumerate(found) if r.id == refund_id]
        made = found[index]
        assert made.state is RefundState.SUCCEEDED
        found[index] = replace(made, state=RefundState.FAILED, failure_reason=reason)
        self.refunded[intent_id] -= made.amount_minor

    async def retrieve_payment(self, intent_id: str) -> ProviderPayment:
        return await self._idempotent("retrieve", "", lambda: self._intent(intent_id))

    async def list_refunds(self, intent_id: str) -> list[ProviderRefund]:
        return await self._idempotent(
            "list_refunds", "", lambda: list(self.refunds.get(intent_id, []))
        )

    async def create_checkout(
        self, request: CheckoutRequest, idempotency_key: str
    ) -> ProviderCheckout:
        def run() -> ProviderCheckout:
            cid = f"cs_{next(self._ids)}"
            return ProviderCheckout(
                cid, CheckoutState.OPEN, False, f"https://pay/{cid}", request.expires_at
            )

        return await self._idempotent("checkout", idempotency_key, run)

    async def expire_checkout(self, session_id: str, idempotency_key: str) -> ProviderCheckout:
        return await self._idempotent(
            "expire",
            idempotency_key,
            lambda: ProviderCheckout(session_id, CheckoutState.EXPIRED, False, "", None),
        )

    async def retrieve_checkout(self, session_id: str) -> ProviderCheckout:
        raise OutcomeUnknown("not scripted", timeout=False)

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        raise SignatureInvalid("fake provider accepts no events")

    async def verify_return(self, params: Mapping[str, str]) -> CheckoutReturn:
        raise SignatureInvalid("fake provider accepts no returns")


class DisputingProvider(FakeProvider):
    """The fake provider with disputes: `disputes[id]` is what re-fetching answers now."""

    def __init__(self) -> None:
        super().__init__()
        self.disputes: dict[str, ProviderDispute | Exception] = {}

    async def retrieve_dispute(self, dispute_id: str) -> ProviderDispute:
        self.calls.append(("retrieve_dispute", dispute_id))
        found = self.disputes[dispute_id]
        if isinstance(found, Exception):
            raise found
        return found


def ledger_deps(**policy: Any) -> Deps:
    """The handlers' deps over the fakes, with a fake wallet ledger (FakeLedger) whose bookings a
    failed round retries after 1 s, backing off to 4 s at most; `policy` adds to that Policy."""
    return Deps(
        FakeUnitOfWork(),
        ProviderRegistry([FakeProvider()]),
        Policy(grant_retry_base=1, grant_retry_max=4, **policy),
        clock=Clock(),
        ledger=FakeLedger(),
    )
