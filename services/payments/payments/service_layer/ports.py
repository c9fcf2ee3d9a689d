"""The ports the handlers need: repositories and the unit of work holding one local transaction
(the provider's port is payments.domain.provider.PaymentProvider).

Adapters implement them against PostgreSQL. Repositories never commit; `async with uow:` rolls back
unless `await uow.commit()` was called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol, Self

from hirepay_platform.errors import HirepayError
from hirepay_platform.fingerprint import Fingerprint
from hirepay_platform.tcc import BarrierRepository, TccBranch, TccOp
from payments.domain.credits import CreditGrant
from payments.domain.disputes import Dispute
from payments.domain.events import AuditEntry, OutboxEvent
from payments.domain.ledger import Account, ExpectedBooking
from payments.domain.model import Payment
from payments.domain.payouts import PayoutAccount, Withdrawal
from payments.domain.reconciliation import LastCheck, MismatchKind, SweepCursor
from payments.domain.refunds import Refund
from payments.domain.transactions import Transaction, UserType

# A check of stored rows that a repository hands to another guard (opaque here: the adapters'
# SELECT and its parameters).
StoredCondition = Any


class PaymentRepository(Protocol):
    async def add(self, payment: Payment) -> None: ...

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None: ...

    def assume(self, payment: Payment, *, guard: bool = True) -> Payment:
        """The payment as this process last committed it, not read again (call it first): the
        unit of work's writes then apply only if the row still holds exactly that, else its
        commit raises StaleRow and writes nothing (redo it with `get(for_update=True)`).
        `guard=False`: another guard checks `stored_as(payment)` instead."""

    def stored_as(self, payment: Payment) -> StoredCondition:
        """The check that the payment's row still holds exactly `payment` (it locks the row),
        for another guard: `TryBarriers.insert_with_batch(only_if=...)`."""

    async def get_by_branch(
        self, branch: TccBranch, *, for_update: bool = False
    ) -> Payment | None: ...

    async def find_by_provider(
        self, *, payment_intent_id: str = "", checkout_id: str = ""
    ) -> Payment | None: ...

    async def save(self, payment: Payment) -> None: ...

    async def list_by_states(
        self,
        states: frozenset[str],
        subsystem: str,
        after_id: str,
        limit: int,
        global_tx_ids: frozenset[str] = frozenset(),
    ) -> list[Payment]:
        """Payments in one of `states` (any when empty) of `subsystem` (any when empty) and of
        one of `global_tx_ids` (any when empty), by id, strictly after `after_id`."""

    async def recently_changed(self, limit: int) -> list[Payment]:
        """The `limit` most recently changed payments."""

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Payment]:
        """Payments whose next poll is due, locked with SKIP LOCKED and leased (next poll moved
        past the lease) so that several workers share them without doing one twice at once."""


class RefundRepository(Protocol):
    async def add(self, refund: Refund) -> None: ...

    async def get(self, refund_id: str, *, for_update: bool = False) -> Refund | None: ...

    async def get_by_request(self, payment_id: str, request_id: str) -> Refund | None: ...

    async def save(self, refund: Refund) -> None: ...

    async def succeeded_total(self, payment_id: str) -> int: ...

    async def list_for_payment(self, payment_id: str) -> list[Refund]:
        """Every refund record of the payment, oldest first."""

    async def lease_due(self, now: datetime, limit: int, lease_seconds: float) -> list[Refund]: ...


class TransactionRepository(Protocol):
    async def add(self, txn: Transaction) -> None: ...

    async def get(self, transaction_id: str, *, for_update: bool = False) -> Transaction | None: ...

    async def get_by_request(
        self, user_type: UserType, user_id: str, request_id: str
    ) -> Transaction | None: ...

    async def find_by_provider(
        self, *, checkout_id: str = "", payment_intent_id: str = ""
    ) -> Transaction | None: ...

    async def lock_user(self, user_type: UserType, user_id: str) -> None:
        """Serialise subscription purchases of one user until the transaction ends."""

    async def latest_active(
        self, user_type: UserType, user_id: str, today: date
    ) -> Transaction | None: ...

    async def save(self, txn: Transaction) -> None: ...

    async def list_stale_pending(self, now: datetime, limit: int) -> list[Transaction]:
        """PENDING transactions whose checkout has expired (missed webhooks), locked SKIP LOCKED."""

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
        """Paid purchases of `providers` changed since `since` (and before `before`): the
        `limit` after `after` in (updated_at, id) order, or with `newest` the `limit` most
        recently changed."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A verified webhook event as its row stores it."""

    provider: str
    event_id: str
    event_type: str
    object_id: str
    payload: dict[str, Any]
    provider_created_at: datetime
    received_at: datetime
    # `payload` as the JSON text it was parsed from, when known: the row stores this text (the
    # same JSON), saving a serialization of the parsed payload (issue 13).
    payload_text: str = ""

    def values(self) -> dict[str, Any]:
        """The row's columns (`applied` aside), as keyword arguments or statement parameters."""
        return {
            "provider": self.provider,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "object_id": self.object_id,
            "payload": self.payload,
            "provider_created_at": self.provider_created_at,
            "received_at": self.received_at,
        }


@dataclass(frozen=True, slots=True)
class FirstLook:
    """What storing a webhook event first found (EventRepository.store_first)."""

    payment: Payment | None  # the payment the event is about, as recorded (None: none found)
    stored: bool  # this delivery stored the event (never when no payment was found)
    applied_before: bool  # an earlier delivery stored it and applied it (a duplicate)


class EventRepository(Protocol):
    async def exists(self, event_id: str) -> bool: ...

    async def store_first(self, record: EventRecord, *, by_checkout: bool, ours: str) -> FirstLook:
        """In one statement that is its own transaction (call it first in its unit of work):
        the payment whose provider id (`by_checkout`: the checkout's, else the payment's) is
        `object_id`, else whose id is `ours`; and, if there is one, the event stored unapplied
        (insert-first on its id)."""

    async def claim(self, record: EventRecord) -> bool:
        """Store the event as applied, or mark applied an event stored unapplied before, in the
        transaction that applies it: False if it was applied before (a duplicate)."""

    async def add(
        self,
        *,
        provider: str,
        event_id: str,
        event_type: str,
        object_id: str,
        payload: dict[str, Any],
        applied: bool,
        provider_created_at: datetime,
        received_at: datetime,
    ) -> bool:
        """Insert-first on the event id: False if it was stored before."""


@dataclass(frozen=True, slots=True)
class HorizonSample:
    """What holds the settlement stream back (payments 0020), read once from the server.

    The stream gives an event only once every transaction that took a transaction id (xid)
    before its writer has ended, on the whole server: the oldest such transaction still running
    is the stream's horizon (OutboxRepository.horizon)."""

    at: datetime  # the server's clock when read
    # The earliest start of a running transaction holding an xid, among those whose start this
    # role may read (its own role's; every role's with pg_read_all_stats), and of a prepared
    # transaction (when prepared); None: none.
    oldest_start: datetime | None
    # (backend pid, xid) of each running transaction holding an xid whose start is hidden from
    # this role (another role's, without pg_read_all_stats): present, but of unknown age.
    unseen: frozenset[tuple[int, int]]
    # When the oldest committed event the stream holds back behind the horizon happened
    # (its occurred_at); None: the stream holds back nothing committed.
    oldest_held: datetime | None


class OutboxRepository(Protocol):
    async def add(self, event: OutboxEvent, *, callback: bool) -> None:
        """Append an event (writers never wait for each other)."""

    async def list_after(self, cursor: int, limit: int, subsystem: str = "") -> list[OutboxEvent]:
        """Committed events after a cursor, oldest first, never past a cursor that a running
        transaction may still commit: a reader resuming after the last one skips nothing."""

    async def backlog(self) -> int:
        """Callbacks not delivered yet."""

    async def horizon(self) -> HorizonSample:
        """The stream's horizon now: the running transactions with an xid, server-wide, and the
        committed events waiting behind them. Reads only (no xid, no lock), a bounded amount."""

    async def lease_callbacks(
        self, now: datetime, limit: int, lease_seconds: float
    ) -> list[OutboxEvent]: ...

    async def callback_done(self, cursor: int, now: datetime) -> None: ...

    async def callback_retry(self, cursor: int, next_at: datetime) -> None: ...

    async def callback_attempts(self, cursor: int) -> int: ...


class AuditRepository(Protocol):
    async def add(self, *entries: AuditEntry) -> None:
        """Append entries, in order (several in one round trip)."""

    async def list_for_payment(self, payment_id: str) -> list[AuditEntry]: ...

    async def list_for_transaction(self, transaction_id: str) -> list[AuditEntry]: ...


class CreditGrantRepository(Protocol):
    async def add(self, grant: CreditGrant) -> bool:
        """Insert-first on the grant id: False if that grant was recorded before."""

    async def owe(self, grant: CreditGrant) -> None:
        """Insert-first on the grant id, without saying whether it was recorded before (it may
        reach the server with the transaction's next statement)."""

    async def get(self, grant_id: str, *, for_update: bool = False) -> CreditGrant | None: ...

    async def for_transaction(self, transaction_id: str) -> list[CreditGrant]: ...

    async def save(self, grant: CreditGrant, *, release_lease: bool = False) -> None:
        """Write the grant's values; `release_lease`: its lease ends too (a retry planned)."""

    async def mark_done(self, grants: list[CreditGrant], now: datetime) -> list[CreditGrant]:
        """CreditGrant.done(now) of those of the grants still pending (locked until commit);
        returns those, marked done, in the order given (the objects given: a grant's other
        values are the caller's, as leased)."""

    async def lease_due(
        self, now: datetime, limit: int, lease_seconds: float
    ) -> list[CreditGrant]: ...

    async def for_payment(self, payment_id: str) -> list[CreditGrant]: ...

    async def expected(
        self, before: datetime, since: datetime | None = None
    ) -> list[ExpectedBooking]:
        """Every transfer the ledger must hold for money settled before `before` (the auditor;
        with `since`, only for records changed at or after it):
        captures and succeeded refunds of payments (marketplace ones too: jobs books them under
        the same ids) and of plan purchases."""


class CreditsLedger(Protocol):
    """The wallet's ledger as payments needs it (ESC-1, CR-2). Every movement carries the
    booking's transfer id, so a repeat is answered with the first transfer and moves nothing."""

    async def move(self, grant: CreditGrant, amounts: dict[str, int]) -> None:
        """Book one grant's legs for `amounts` (a purchase: its money and credits)."""

    async def move_many(self, grants: list[CreditGrant]) -> list[HirepayError | None]:
        """Book several payments' bookings in one call; each one's outcome (None: booked)."""

    async def account_id(self, account: Account) -> str:
        """The wallet's id of an account (opened if needed)."""

    async def existing_account_id(self, account: Account) -> str:
        """The wallet's id of an account, "" when it was never opened (opens nothing)."""

    async def transfer_entries(self, transfer_ids: Sequence[str]) -> list[tuple[str, str, int]]:
        """Every entry of the given transfers: (transfer id, account id, signed amount); the
        auditor's read, by transfer rather than by whole accounts (issue 13)."""

    async def available(self, user_id: str) -> dict[str, int]:
        """The user's available credits per unit (0 for units without an account)."""

    async def hold_coins(self, refund: Refund, owner_id: str) -> None:
        """Reserve the coins a refund takes back on the owner's coin wallet (branch
        `refund:<refund id>`, towards coin issuance); INSUFFICIENT_FUNDS (a HirepayError) when
        they are not available, HOLD_CANCELLED when the branch was cancelled first."""

    async def take_coins(self, refund: Refund) -> None:
        """Post the refund's coin hold: the coins go back to coin issuance (a repeat: nothing)."""

    async def return_coins(self, refund: Refund, reason: str) -> None:
        """Release the refund's coin hold (before any hold: recorded, so none can follow)."""


class PayoutRepository(Protocol):
    """Payout accounts (one per user) and withdrawals (ESC-9)."""

    async def add_account(self, account: PayoutAccount) -> bool:
        """Insert-first on the user: False if the user had one already."""

    async def get_account(
        self, user_id: str, *, for_update: bool = False
    ) -> PayoutAccount | None: ...

    async def save_account(self, account: PayoutAccount) -> None: ...

    async def add(self, withdrawal: Withdrawal) -> bool:
        """Insert-first on (user, request id): False if that request was recorded before."""

    async def get(self, withdrawal_id: str, *, for_update: bool = False) -> Withdrawal | None: ...

    async def get_by_request(self, user_id: str, request_id: str) -> Withdrawal | None: ...

    async def find_by_payout(self, payout_id: str) -> Withdrawal | None: ...

    async def save(self, withdrawal: Withdrawal) -> None: ...

    async def remove(self, withdrawal_id: str) -> None: ...

    async def list_for_user(
        self, user_id: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[Withdrawal]:
        """Newest first, strictly before the (created_at, id) cursor."""

    async def lease_due(
        self, now: datetime, limit: int, lease_seconds: float, paid_since: datetime
    ) -> list[Withdrawal]:
        """Due unfinished withdrawals, and those paid since `paid_since` whose return watch is
        due, leased."""

    async def unfinished_since(self, before: datetime, limit: int) -> list[Withdrawal]:
        """Not final (a returned payout not yet credited back included), unchanged since
        `before`, the longest unchanged first."""


class PayoutLedger(Protocol):
    """The wallet's ledger as withdrawals need it: a hold on the user's cash wallet (branch
    `payout:<id>`) posted to provider clearing when paid out, released when the payout failed.
    Each call is the wallet's TCC handshake, so a repeat changes nothing."""

    async def hold(self, withdrawal: Withdrawal) -> None:
        """Reserve the amount; INSUFFICIENT_FUNDS (a HirepayError) when it is not available."""

    async def post(self, withdrawal: Withdrawal) -> None:
        """Post the hold: user -> provider clearing (`provider:<name>`)."""

    async def release(self, withdrawal: Withdrawal, reason: str) -> None:
        """Release the hold (a release before any hold is recorded so none can follow)."""

    async def credit_back(self, withdrawal: Withdrawal) -> None:
        """A payout returned after it was paid: provider clearing -> user, under the
        withdrawal's `payout:<id>:returned` transfer id (a repeat moves nothing)."""


class TryBarriers(BarrierRepository, Protocol):
    """The platform's barrier, and a first Try's row sent with the unit of work's writes."""

    def insert_with_batch(
        self,
        branch: TccBranch,
        op: TccOp,
        origin: TccOp,
        fingerprint: Fingerprint,
        *,
        only_if: StoredCondition | None = None,
    ) -> None:
        """Insert-first with the unit of work's writes, one statement that writes them only if
        the row is new (and `only_if`, a repository's `stored_as`, holds); else its commit
        raises StaleRow, nothing written."""


class ReconciliationRepository(Protocol):
    """The provider reconciliation's last check of each payment (OPS-3)."""

    async def last_checks(self, payment_ids: Sequence[str]) -> dict[str, LastCheck]:
        """Each of the payments' last check (never checked: absent)."""

    async def record_checks(
        self, found: Mapping[str, Sequence[tuple[MismatchKind, str]] | None], at: datetime
    ) -> None:
        """The payments were checked `at` and found what `found` says (None: the provider could
        not be read, what the check before found is kept)."""

    async def forget_before(self, before: datetime, limit: int) -> int:
        """Forget at most `limit` records not renewed since `before`, oldest first."""

    async def purchase_sweeps(self, providers: Sequence[str]) -> dict[str, SweepCursor]:
        """Where each provider's pass through its paid purchases is (never ran: absent)."""

    async def save_purchase_sweep(self, provider: str, cursor: SweepCursor) -> bool:
        """The provider's pass through paid purchases is at `cursor` unless further on already
        (never moved back); whether it moved."""


class DisputeRepository(Protocol):
    async def add(self, dispute: Dispute) -> bool:
        """Insert-first on the provider's dispute id: False if it was recorded before."""

    async def get(self, dispute_id: str, *, for_update: bool = False) -> Dispute | None: ...

    async def save(self, dispute: Dispute) -> None: ...

    async def for_payment(self, payment_id: str) -> list[Dispute]: ...


class PaymentsUnitOfWork(Protocol):
    """One local transaction over the payments repositories."""

    payments: PaymentRepository
    barriers: TryBarriers
    refunds: RefundRepository
    transactions: TransactionRepository
    events: EventRepository
    outbox: OutboxRepository
    audit: AuditRepository
    credit_grants: CreditGrantRepository
    payouts: PayoutRepository
    reconciliations: ReconciliationRepository
    disputes: DisputeRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def autocommit(self) -> None:
        """Each following statement commits by itself (a unit of work of one write)."""

    async def commit(self) -> None: ...

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once this unit of work has committed (never if it does not)."""
