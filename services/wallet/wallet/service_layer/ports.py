"""The ports the handlers need: repositories and the unit of work that holds one local transaction.

Adapters implement them against PostgreSQL; unit tests implement them in memory. The clock and the
configuration are not here: handlers get them from `Deps` (service_layer/deps.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, Self

from hirepay_platform.fingerprint import Fingerprint
from hirepay_platform.tcc import BarrierRepository, TccBranch
from wallet.domain.audit import LedgerFinding
from wallet.domain.holds import Hold
from wallet.domain.ledger import Entry, Posting, TransferRecord
from wallet.domain.model import Account, AccountKind, AccountRef, Balance, NewAccount
from wallet.domain.reports import AccountFilter, EarningsBucket, EntryFilter, LedgerLine, Period


@dataclass(frozen=True, slots=True)
class TransferHeader:
    """A transfer about to be claimed: its id is unique, so inserting it first claims the id."""

    id: str
    kind: str  # "transfer", "split" or "hold" (posted by a Confirm)
    description: str
    metadata: Mapping[str, str]
    fingerprint: Fingerprint


@dataclass(frozen=True, slots=True)
class StoredTransfer:
    """A transfer as stored: the record plus what idempotency checks need."""

    record: TransferRecord
    kind: str
    fingerprint: Fingerprint


@dataclass(frozen=True, slots=True)
class PostOutcome:
    """What applying a posting did: the entries written, or the accounts whose check failed (then
    nothing may be committed: the caller raises, and the unit of work rolls back), or - when the
    posting was to claim its transfer id first - that the id was taken and nothing was applied."""

    entries: tuple[Entry, ...] = ()
    rejected: tuple[str, ...] = ()
    claimed: bool = True
    created_at: datetime | None = None


class AccountRepository(Protocol):
    async def add(self, account: NewAccount) -> Account | None:
        """Insert-first on (owner, unit, kind): the new account, or None if one exists."""

    async def get(self, account_id: str) -> Account | None: ...

    async def find(self, owner_id: str, unit: str, kind: AccountKind) -> Account | None: ...

    async def refs(self, account_ids: Collection[str]) -> dict[str, AccountRef]:
        """The immutable attributes of those of `account_ids` that exist."""

    async def list_by_owner(
        self, owner_id: str, after: int | None, limit: int
    ) -> list[tuple[int, Account]]:
        """Accounts of an owner, oldest first, each with its keyset cursor."""


class LedgerRepository(Protocol):
    async def claim_transfer(self, header: TransferHeader) -> datetime | None:
        """Insert the transfer unless its id exists; its creation time, or None if it existed."""

    async def release_claim(self, transfer_id: str) -> None:
        """Undo the claim of a transfer this transaction claimed but whose posting was refused (a
        refused posting changes no balance), so a batch can go on with its other transfers."""

    async def get_transfer(self, transfer_id: str) -> StoredTransfer | None: ...

    async def lock_balances(self, account_ids: Collection[str]) -> dict[str, Balance]:
        """Lock the account rows (ascending id) and read their balances after the lock."""

    async def lock_shards(self, shards: Collection[tuple[str, int]]) -> None:
        """Lock balance shard rows, (account, shard) pairs, in that order (as a posting does,
        after its account rows)."""

    async def post(
        self, transfer_id: str | None, posting: Posting, claim: TransferHeader | None = None
    ) -> PostOutcome:
        """Apply a posting: row changes with the no-overdraft condition, then shards and entries
        only if every row change passed; a refused posting changes nothing but its claim. With `claim`, the transfer is inserted first, in the same
        statement, unless its id exists (then nothing is applied and `claimed` is False)."""

    async def claim_ahead(self, items: Sequence[tuple[TransferHeader, Posting]]) -> set[str]:
        """The first statement of a checked batch: lock every account row the items change (id
        order), claim every id (id order; an id listed twice with its first item's fields), lock
        every shard they may change ((account, shard) order). The ids this transaction claimed;
        the batch's runs post them without claiming them again (post_many's `ahead`, post
        without `claim`)."""

    async def post_many(
        self, items: Sequence[tuple[TransferHeader, Posting]], ahead: Collection[str] = ()
    ) -> list[PostOutcome]:
        """Claim and post each transfer in order, set-based (a few round trips for the lot): an
        outcome per item. Ids must be distinct, and postings with `guarded_sharded` accounts are
        not allowed here (they need the checked slow path). A refused item changes nothing, its
        claim included; a taken id applies nothing. Ids in `ahead` were claimed by this
        transaction already (claim_ahead) and are posted as claimed."""

    async def post_run_alone(
        self, items: Sequence[tuple[TransferHeader, Posting]]
    ) -> list[PostOutcome] | None:
        """Claim and post each transfer as post_many does, but as one statement that is its own
        transaction (committed when this returns), allowed only before the unit of work has begun
        one. It applies only if no claimed posting can be refused, judged on a floor of each
        balance (every debit of the run counted, earlier credits not); otherwise it writes
        nothing at all and returns None, and the caller posts the run checked (post_many)."""

    async def post_run(
        self, items: Sequence[tuple[TransferHeader, Posting]]
    ) -> list[PostOutcome] | None:
        """post_run_alone as one statement of the unit of work's transaction (committed with
        it): one round trip instead of post_many's two, or None with nothing written."""

    async def list_entries(self, account_id: str, before_id: int | None, limit: int) -> list[Entry]:
        """An account's entries, newest first, with ids below `before_id`."""


class HoldRepository(Protocol):
    async def add(self, hold: Hold) -> None: ...

    async def add_many(self, holds: Sequence[Hold]) -> None:
        """Insert holds of distinct branches (one round trip)."""

    async def add_reserved(self, holds: Sequence[Hold]) -> None:
        """Insert new pending holds of distinct branches and add each one's amount to its
        account's pending balance, in one round trip. The caller has locked those account rows
        and judged every reservation under the no-overdraft rule."""

    async def reserve_alone(
        self, calls: Sequence[tuple[TccBranch, Fingerprint]], holds: Sequence[Hold]
    ) -> set[TccBranch] | None:
        """A group of first Trys of distinct branches as one statement that is its own transaction
        (committed when this returns), allowed only before the unit of work has begun one, and
        only for holds on unsharded accounts: insert each call's barrier row, lock the accounts
        (id order), add the hold (`holds`, one per call, same order) of each branch inserted with
        its reservation. The branches inserted (the others were there already: answer them by
        their barrier rows); None, with nothing written, when the holds do not all fit under the
        no-overdraft rule (then judge them one by one, checked)."""

    def recall(self, branch: TccBranch) -> Hold | None:
        """The hold of a branch as this process reserved it (pending), if it remembers it: a
        guess to plan a Confirm on before any round trip, never to be trusted on its own."""

    async def confirm_alone(
        self,
        confirms: Sequence[tuple[Hold, Fingerprint]],
        items: Sequence[tuple[TransferHeader, Posting]],
        now: datetime,
    ) -> list[PostOutcome] | None:
        """A group of first Confirms of distinct branches as one statement that is its own
        transaction (committed when this returns), allowed only before the unit of work has begun
        one: each hold (`confirms`: confirmed as planned, with the call's fingerprint) is locked
        and compared with its row, which must be the same pending hold, unexpired at `now`; then
        the transfers (`items`, the same order; none a guarded debit of a sharded account) are
        posted, the barrier rows inserted and the holds saved. Each transfer's outcome; None,
        with nothing written, when a hold is not as planned or a branch has its Confirm barrier
        row already (then run the group checked)."""

    async def get(self, branch: TccBranch, *, for_update: bool = False) -> Hold | None:
        """The hold of a branch; `for_update` locks it until the transaction ends."""

    async def try_and_lock(
        self,
        calls: Sequence[tuple[TccBranch, Fingerprint]],
        account_ids: Collection[str],
    ) -> tuple[set[TccBranch], dict[str, Balance], list[str]]:
        """A group of Trys of distinct branches in one round trip: insert each one's barrier row
        (the platform's insert-first), then lock the accounts (id order) and read them with the
        lock. The branches inserted; each account's balance (a sharded one's without its shards);
        the sharded accounts, whose balance `LedgerRepository.lock_balances` must read."""

    async def confirm_and_lock(
        self,
        calls: Sequence[tuple[TccBranch, Fingerprint]],
        lock: Collection[TccBranch] | None = None,
    ) -> tuple[set[TccBranch], dict[TccBranch, Hold]]:
        """A group of Confirms of distinct branches in one round trip: lock (key order) the hold
        of each branch (only those of `lock` if given), then insert each one's barrier row (the
        order of the one-statement Confirm: twins on both paths queue on the hold). The branches
        inserted, and their locked holds."""

    async def cancel_and_lock(
        self, branches: Sequence[TccBranch], also_lock: Collection[TccBranch] = ()
    ) -> tuple[set[TccBranch], dict[TccBranch, Hold]]:
        """A group of Cancels of distinct branches in one round trip, as confirm_and_lock: lock
        (key order) the hold of each branch, and of each branch of `also_lock` (the round's
        Confirms', all in one key order), then insert each Cancel's barrier row. The branches
        inserted (the others were cancelled before: replays), and their holds."""

    async def save(self, holds: Collection[Hold]) -> None:
        """Persist the resolution (state, amounts, transfer, time) of holds."""

    async def lock_expired(self, now: datetime, limit: int) -> list[Hold]:
        """Up to `limit` pending holds past their expiry, locked, skipping those another
        transaction holds (so several expiry workers share the work instead of queueing)."""


class LedgerAuditRepository(Protocol):
    async def findings(self, hold_cutoff: datetime, limit: int) -> list[LedgerFinding]:
        """Broken ledger invariants (at most `limit` per kind); holds expired before the cutoff."""


class LedgerReadRepository(Protocol):
    """The readers' queries (ESC-11): a user's wallet and history, admin listings and reports."""

    async def wallet_accounts(self, owner_id: str) -> list[Account]:
        """The owner's USER accounts with their balances, by unit."""

    async def lines(
        self, where: EntryFilter, before_id: int | None, limit: int
    ) -> list[LedgerLine]:
        """Entries matching `where` with ids below `before_id` (None: from the newest), newest
        first, each with its transfer's description and metadata and its counter-party's kind."""

    async def balances(
        self, where: AccountFilter, after: int | None, limit: int
    ) -> list[tuple[int, Account]]:
        """Accounts matching `where`, oldest first, each with its keyset cursor."""

    async def earnings(
        self, since: datetime, until: datetime, period: Period
    ) -> list[EarningsBucket]:
        """Platform revenue's credits and debits in [since, until) per period and unit."""


class WalletUnitOfWork(Protocol):
    """One local transaction over the wallet's repositories; rolls back unless committed."""

    accounts: AccountRepository
    ledger: LedgerRepository
    holds: HoldRepository
    # The platform's TCC barrier table (hirepay_platform.barrier implements it in SQL).
    barriers: BarrierRepository
    audit: LedgerAuditRepository
    reports: LedgerReadRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def commit(self) -> None: ...
