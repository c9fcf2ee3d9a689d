"""The ledger's entities and rules: accounts, balances, entries, postings and the hold state machine.

Plain Python: nothing here knows about SQL or gRPC. The service layer loads what a rule needs, asks
this module what to change, and hands the answer (a `Posting`) to a repository to apply.
"""

from __future__ import annotations

import enum
import re
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from hirepay_platform import money
from hirepay_platform.errors import HirepayError
from wallet.domain.errors import (
    AccountNotFound,
    HoldAlreadyResolved,
    HoldExpired,
    UnitMismatch,
    invalid,
)

# Balance rows per sharded account. Credits pick one shard by a hash of their transfer id, so
# concurrent fees into the one platform revenue account rarely wait for each other's row lock.
BALANCE_SHARDS = 16

DEFAULT_HOLD_TTL = timedelta(seconds=900)
MAX_HOLD_TTL = timedelta(days=30)

# Ids chosen by clients (transfer ids, global transaction and branch ids). No "/" so the ids the
# wallet derives from them (see confirm_transfer_id) can never collide with a client's own.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class AccountKind(enum.StrEnum):
    """What an account is for (mirrors the contract's AccountKind)."""

    USER = "user"
    PLATFORM_REVENUE = "platform_revenue"
    ESCROW = "escrow"
    PROVIDER_CLEARING = "provider_clearing"
    PAYOUTS = "payouts"
    ISSUANCE = "issuance"


# System accounts that many transactions credit at once; their balance lives in shard rows.
SHARDED_KINDS: frozenset[AccountKind] = frozenset(
    {
        AccountKind.PLATFORM_REVENUE,
        AccountKind.PROVIDER_CLEARING,
        AccountKind.ISSUANCE,
        AccountKind.PAYOUTS,
    }
)


def shard_count_for(kind: AccountKind, allow_negative: bool) -> int:
    """How many balance shards an account gets: none for ordinary wallets.

    Sharding pays off only where no balance check is needed on the hot path: accounts that may go
    negative, and credit-heavy system accounts (a rare debit of those takes the slow, locked path).
    """
    return BALANCE_SHARDS if allow_negative or kind in SHARDED_KINDS else 0


def shard_for(key: str, shards: int) -> int:
    """The shard a transfer touches on a sharded account: stable for one transfer id."""
    return zlib.crc32(key.encode()) % shards


# --- validation of identifiers ---------------------------------------------------------------


def validate_account_id(value: str, field: str = "account_id") -> str:
    """Account ids are UUIDs assigned by the wallet; anything else cannot name an account."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise invalid(field, "must be an account id (UUID)") from None


def validate_client_id(value: str, field: str) -> str:
    """A client-chosen id: 1-128 characters of letters, digits and . _ : @ -."""
    if not _CLIENT_ID.fullmatch(value or ""):
        raise invalid(field, "must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    return value


def validate_owner_id(value: str, field: str = "owner_id") -> str:
    """An owner: a user id as authenticated upstream (e.g. a JWT subject such as "auth0|42"), or
    "platform"; any 1-128 printable characters without spaces."""
    if not 0 < len(value) <= 128 or not value.isprintable() or any(ch.isspace() for ch in value):
        raise invalid(field, "must be 1-128 printable characters without spaces")
    return value


def validate_description(value: str, field: str = "description") -> str:
    if len(value) > 500:
        raise invalid(field, "must be at most 500 characters")
    return value


def validate_metadata(value: Mapping[str, str], field: str = "metadata") -> dict[str, str]:
    if len(value) > 50:
        raise invalid(field, "must have at most 50 keys")
    for key, item in value.items():
        if not key or len(key) > 64 or len(item) > 500:
            raise invalid(field, "keys must be 1-64 characters and values at most 500")
    return dict(value)


# --- accounts and balances -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountRef:
    """The attributes of an account that never change after it is opened."""

    id: str
    owner_id: str
    unit: str
    kind: AccountKind
    allow_negative: bool
    shards: int

    @property
    def sharded(self) -> bool:
        return self.shards > 0


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance: posted entries, pending (held) debits, and what may be spent."""

    posted: int
    pending: int

    @property
    def available(self) -> int:
        return self.posted - self.pending


@dataclass(frozen=True, slots=True)
class Account:
    """An account with its current balance."""

    ref: AccountRef
    balance: Balance
    created_at: datetime

    @property
    def id(self) -> str:
        return self.ref.id


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account about to be opened."""

    id: str
    owner_id: str
    unit: str
    kind: AccountKind
    allow_negative: bool

    @property
    def shards(self) -> int:
        return shard_count_for(self.kind, self.allow_negative)


def require_accounts(accounts: Mapping[str, AccountRef], wanted: Iterable[tuple[str, str]]) -> None:
    """Raise ACCOUNT_NOT_FOUND for the first (account id, field) that is not in `accounts`."""
    for account_id, field_name in wanted:
        if account_id not in accounts:
            raise AccountNotFound(account_id, field=field_name)


# --- entries and postings --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leg:
    """Money moving from one account to another within a transfer."""

    from_account_id: str
    to_account_id: str
    amount: int
    unit: str


@dataclass(frozen=True, slots=True)
class EntryLine:
    """An entry about to be written: positive credits the account, negative debits it."""

    account_id: str
    unit: str
    amount: int


@dataclass(frozen=True, slots=True)
class Entry:
    """A posted entry of the ledger."""

    id: int
    transfer_id: str
    account_id: str
    unit: str
    amount: int
    created_at: datetime
    description: str = ""


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """A posted transfer: its entries sum to zero per unit."""

    id: str
    description: str
    metadata: dict[str, str]
    created_at: datetime
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class BalanceChange:
    """A change to one account's balance row (deltas, not new values)."""

    account_id: str
    posted: int = 0
    pending: int = 0

    @property
    def available(self) -> int:
        """How the change moves the available balance (posted - pending)."""
        return self.posted - self.pending


@dataclass(frozen=True, slots=True)
class ShardChange:
    """A change to one balance shard of a sharded account."""

    account_id: str
    shard: int
    posted: int


@dataclass(frozen=True, slots=True)
class Posting:
    """Everything one local transaction changes in the ledger, in lock order.

    `row_changes` are applied to account rows, locked in ascending id order, each with the
    no-overdraft condition; `shard_changes` to balance shards, also in order, after every row change
    succeeded. `guarded_sharded` lists sharded accounts that may not go negative but whose
    available balance drops: their shard sum must be checked under their row lock (the slow path).
    """

    entries: tuple[EntryLine, ...] = ()
    row_changes: tuple[BalanceChange, ...] = ()
    shard_changes: tuple[ShardChange, ...] = ()
    guarded_sharded: tuple[str, ...] = ()


def entries_for_legs(legs: Sequence[Leg], accounts: Mapping[str, AccountRef]) -> list[EntryLine]:
    """Two entries per leg (a debit and a credit), after checking each leg against its accounts."""
    if not legs:
        raise invalid("legs", "at least one leg is required")
    if len(legs) > 100:
        raise invalid("legs", "at most 100 legs")
    lines: list[EntryLine] = []
    for i, leg in enumerate(legs):
        where = f"legs[{i}]"
        money.validate_amount(leg.amount, field=f"{where}.amount.amount_minor")
        money.validate_unit(leg.unit, field=f"{where}.amount.currency")
        if leg.from_account_id == leg.to_account_id:
            raise invalid(f"{where}.to_account_id", "must differ from from_account_id")
        for account_id, side in (
            (leg.from_account_id, "from_account_id"),
            (leg.to_account_id, "to_account_id"),
        ):
            account = accounts.get(account_id)
            if account is None:
                raise AccountNotFound(account_id, field=f"{where}.{side}")
            if account.unit != leg.unit:
                raise UnitMismatch(f"{where}.amount.currency", account.unit, leg.unit)
        lines.append(EntryLine(leg.from_account_id, leg.unit, -leg.amount))
        lines.append(EntryLine(leg.to_account_id, leg.unit, leg.amount))
    return lines


def unbalanced_units(entries: Iterable[EntryLine]) -> dict[str, int]:
    """Units whose entries do not sum to zero, with their sums (empty when balanced)."""
    totals: dict[str, int] = defaultdict(int)
    for entry in entries:
        totals[entry.unit] += entry.amount
    return {unit: total for unit, total in totals.items() if total != 0}


def plan_posting(
    key: str,
    entries: Sequence[EntryLine],
    accounts: Mapping[str, AccountRef],
    pending: Sequence[BalanceChange] = (),
) -> Posting:
    """Turn entries (and pending changes of holds) into the row and shard changes to apply.

    `key` (the transfer id, or the hold's branch) picks the shard of sharded accounts. Refuses
    entries that do not sum to zero per unit: an unbalanced posting is a bug, never a user error.
    """
    broken = unbalanced_units(entries)
    if broken:
        raise HirepayError(f"entries do not balance: {broken}", reason="UNBALANCED_POSTING")
    posted: dict[str, int] = defaultdict(int)
    held: dict[str, int] = defaultdict(int)
    for entry in entries:
        if entry.amount == 0:
            raise HirepayError("zero entry", reason="UNBALANCED_POSTING")
        posted[entry.account_id] += entry.amount
    for change in pending:
        posted[change.account_id] += change.posted
        held[change.account_id] += change.pending
    rows: list[BalanceChange] = []
    shards: list[ShardChange] = []
    guarded: list[str] = []
    for account_id in sorted(posted.keys() | held.keys()):
        account = accounts[account_id]
        d_posted, d_pending = posted.get(account_id, 0), held.get(account_id, 0)
        if not account.sharded:
            if d_posted or d_pending:
                rows.append(BalanceChange(account_id, d_posted, d_pending))
            continue
        if d_posted:
            shards.append(ShardChange(account_id, shard_for(key, account.shards), d_posted))
        needs_check = not account.allow_negative and d_posted - d_pending < 0
        if needs_check:
            guarded.append(account_id)
        # A sharded account's row is touched (and locked) only for holds or a guarded debit;
        # plain credits to it go to one shard and never queue on the row.
        if d_pending or needs_check:
            rows.append(BalanceChange(account_id, 0, d_pending))
    return Posting(
        entries=tuple(entries),
        row_changes=tuple(rows),
        shard_changes=tuple(sorted(shards, key=lambda s: (s.account_id, s.shard))),
        guarded_sharded=tuple(guarded),
    )


# --- holds: the wallet's side of the two-phase handshake -------------------------------------


@dataclass(frozen=True, slots=True)
class TccBranch:
    """One participant branch of a global (Try-Confirm-Cancel) transaction."""

    global_tx_id: str
    branch_id: str

    def validated(self) -> TccBranch:
        validate_client_id(self.global_tx_id, "branch.global_tx_id")
        validate_client_id(self.branch_id, "branch.branch_id")
        return self

    def __str__(self) -> str:
        return f"{self.global_tx_id}/{self.branch_id}"


def confirm_transfer_id(branch: TccBranch) -> str:
    """Id of the transfer a Confirm posts; "/" keeps it apart from every client-chosen id."""
    return f"hold/{branch.global_tx_id}/{branch.branch_id}"


class HoldState(enum.StrEnum):
    """Lifecycle of a hold: pending, then exactly one of the three resolutions."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class TccOp(enum.StrEnum):
    """The three operations of a branch, each recorded once in the barrier table."""

    TRY = "try"
    CONFIRM = "confirm"
    CANCEL = "cancel"


def hold_ttl(expires_in_seconds: int) -> timedelta:
    """Validate a requested hold lifetime; 0 means the default."""
    if expires_in_seconds < 0:
        raise invalid("expires_in_seconds", "must not be negative")
    ttl = timedelta(seconds=expires_in_seconds) if expires_in_seconds else DEFAULT_HOLD_TTL
    if ttl > MAX_HOLD_TTL:
        raise invalid("expires_in_seconds", "must be at most 30 days")
    return ttl


@dataclass(slots=True)
class Hold:
    """An amount reserved on an account: it reduces what is available until it resolves, once."""

    branch: TccBranch
    account_id: str
    destination_account_id: str
    unit: str
    amount: int
    expires_at: datetime
    created_at: datetime
    description: str = ""
    state: HoldState = HoldState.PENDING
    confirmed_amount: int = 0
    transfer_id: str | None = None
    resolved_at: datetime | None = None

    def reservation(self) -> BalanceChange:
        """What reserving the hold does to its account: the amount becomes pending."""
        return BalanceChange(self.account_id, 0, self.amount)

    def _refuse_unless_pending(self) -> None:
        if self.state is not HoldState.PENDING:
            raise HoldAlreadyResolved(
                self.branch.global_tx_id, self.branch.branch_id, self.state.value
            )

    def release(self) -> BalanceChange:
        """What resolving the hold does to its account's pending balance: the whole hold leaves it
        (a Confirm posts its part as entries; the rest becomes available again)."""
        return BalanceChange(self.account_id, 0, -self.amount)

    def confirm(self, amount: int, now: datetime) -> int:
        """Resolve the hold by posting `amount` of it (0 = all); returns the amount posted."""
        self._refuse_unless_pending()
        if now >= self.expires_at:
            raise HoldExpired(self.branch.global_tx_id, self.branch.branch_id)
        posted = amount or self.amount
        money.validate_amount(posted, field="amount_minor")
        if posted > self.amount:
            raise invalid("amount_minor", f"must not exceed the held amount {self.amount}")
        self.state = HoldState.CONFIRMED
        self.confirmed_amount = posted
        self.transfer_id = confirm_transfer_id(self.branch)
        self.resolved_at = now
        return posted

    def cancel(self, now: datetime) -> bool:
        """Resolve the hold by releasing it; False when it had already expired (nothing to do,
        and the Cancel still succeeds: the money is free either way)."""
        if self.state is HoldState.EXPIRED:
            return False
        self._refuse_unless_pending()
        self.state = HoldState.CANCELLED
        self.resolved_at = now
        return True

    def expire(self, now: datetime) -> None:
        """Resolve a pending hold whose expiry has passed (the expiry worker)."""
        self._refuse_unless_pending()
        if now < self.expires_at:
            raise HirepayError("hold has not expired yet", reason="HOLD_NOT_EXPIRED")
        self.state = HoldState.EXPIRED
        self.resolved_at = now
