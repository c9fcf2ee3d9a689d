"""The ledger's entries and postings: legs become balanced entries, and entries become the row and
shard changes one local transaction applies (plain Python; a repository applies the `Posting`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from hirepay_platform import money
from hirepay_platform.errors import HirepayError
from wallet.domain.errors import AccountNotFound, UnitMismatch, invalid
from wallet.domain.model import AccountRef, Balance, shard_for


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


def change_allowed(
    balance: Balance, change: BalanceChange, *, allow_negative: bool, sharded: bool
) -> bool:
    """The no-overdraft rule for one row change: an account that may go negative, a sharded one
    (checked on its slow path), a change that does not lower availability, or one that leaves
    posted - pending >= 0. The posting statement applies the same rule in SQL."""
    return (
        allow_negative
        or sharded
        or change.available >= 0
        or balance.available + change.available >= 0
    )


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
    if not any(totals.values()):  # (balanced, every posting: no comprehension run; issue 13)
        return {}
    return {unit: total for unit, total in totals.items() if total != 0}


def _net_changes(
    entries: Sequence[EntryLine], pending: Sequence[BalanceChange]
) -> list[BalanceChange]:
    """The net posted and pending change of each account touched, in ascending account id."""
    posted: dict[str, int] = defaultdict(int)
    held: dict[str, int] = defaultdict(int)
    for entry in entries:
        if entry.amount == 0:
            raise HirepayError("zero entry", reason="UNBALANCED_POSTING")
        posted[entry.account_id] += entry.amount
    for change in pending:
        posted[change.account_id] += change.posted
        held[change.account_id] += change.pending
    return [
        BalanceChange(account_id, posted.get(account_id, 0), held.get(account_id, 0))
        for account_id in sorted(posted.keys() | held.keys())
    ]


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
    rows: list[BalanceChange] = []
    shards: list[ShardChange] = []
    guarded: list[str] = []
    for change in _net_changes(entries, pending):
        account = accounts[change.account_id]
        if not account.shards:  # (`sharded`, less a property call per account)
            if change.posted or change.pending:
                rows.append(change)
            continue
        if change.posted:
            shard = shard_for(key, account.shards)
            shards.append(ShardChange(change.account_id, shard, change.posted))
        needs_check = not account.allow_negative and change.available < 0
        if needs_check:
            guarded.append(change.account_id)
        # A sharded account's row is touched (and locked) only for holds or a guarded debit;
        # plain credits to it go to one shard and never queue on the row.
        if change.pending or needs_check:
            rows.append(BalanceChange(change.account_id, 0, change.pending))
    return Posting(
        entries=tuple(entries),
        row_changes=tuple(rows),
        shard_changes=tuple(sorted(shards, key=lambda s: (s.account_id, s.shard))),
        guarded_sharded=tuple(guarded),
    )
