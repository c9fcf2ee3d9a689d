"""PostgreSQL repository of holds: add, read (optionally locked), save resolutions, lock expired.

The hot statements are built once, as text with array parameters, so one statement serves one
hold or a group of them (the grouped Reserve and Confirm calls) and no statement is constructed
per call. Each is run hot (db.HotStatement: past SQLAlchemy's execution once warm, as the ledger's
are; a grouped Reserve or Confirm is one such statement, ~70 Python calls fewer; issue 13).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.barrier import insert_many_params, insert_many_sql
from hirepay_platform.db import HotStatement, execute_alone
from hirepay_platform.fingerprint import Fingerprint
from hirepay_platform.sql_lists import joined, joined_checked, listed, quoted, quoted_list
from hirepay_platform.tcc import TccBranch, TccOp
from wallet.adapters.repositories import ledger_sql
from wallet.adapters.repositories.ledger import changes_shards, run_outcomes, run_params
from wallet.adapters.tables import HOLD_IS_PENDING, tcc_barriers
from wallet.adapters.tables import holds as H
from wallet.domain.holds import Hold, HoldState
from wallet.domain.ledger import Posting
from wallet.domain.model import Balance
from wallet.service_layer.ports import PostOutcome, TransferHeader

_COLUMNS = (
    "global_tx_id, branch_id, account_id, destination_account_id, unit, amount,"
    " confirmed_amount, state, expires_at, transfer_id, description, created_at, resolved_at"
)
_ADD = HotStatement(
    text(
        f"""
    INSERT INTO holds ({_COLUMNS})
    SELECT * FROM unnest(
        {listed("global_tx_ids", "text")}, {listed("branch_ids", "text")},
        {listed("account_ids", "uuid")}, {listed("destination_account_ids", "uuid")},
        {listed("units", "text")}, {listed("amounts", "bigint")}, CAST(:confirmed_amounts AS bigint[]),
        CAST(:states AS text[]), CAST(:expires_at AS timestamptz[]),
        CAST(:transfer_ids AS text[]), {quoted("descriptions", "text")},
        CAST(:created_at AS timestamptz[]), CAST(:resolved_at AS timestamptz[]))
    """
    )
)


# New pending holds (`new_hold`'s, of one `now`): what differs from hold to hold as arrays, what
# every new hold has alike as literals and one :created_at, so that a group's statement encodes 8
# arrays rather than 13 (array parameters are most of asyncpg's cost of a grouped Reserve;
# timestamps the dearest). An `h` row per hold, in the columns' order (_COLUMNS). `keys` prefixes
# the names of the arrays of the holds' keys: "barrier_" where the statement inserts a barrier
# row per hold (the same branches, the same order), so that they are bound once.
def _new_holds(keys: str) -> str:
    return f"""
        SELECT h.global_tx_id, h.branch_id, h.account_id, h.destination_account_id, h.unit,
               h.amount, 0, 'pending', h.expires_at, NULL, h.description,
               CAST(:created_at AS timestamptz), NULL
          FROM unnest(
            {listed(keys + "global_tx_ids", "text")}, {listed(keys + "branch_ids", "text")},
            {listed("account_ids", "uuid")}, {listed("destination_account_ids", "uuid")},
            {listed("units", "text")}, {listed("amounts", "bigint")},
            CAST(:expires_at AS timestamptz[]), {quoted("descriptions", "text")})
            AS h(global_tx_id, branch_id, account_id, destination_account_id, unit, amount,
                 expires_at, description)"""


# New holds and their reservations in one round trip: each account's pending balance grows by
# the amounts of its new holds (rows the caller locked and judged under the no-overdraft rule).
# The holds' row version (xmin, one per statement) is what a Confirm later compares.
_ADD_RESERVED = HotStatement(
    text(
        f"""
    WITH added AS (
        INSERT INTO holds ({_COLUMNS})
        {_new_holds("")}
        RETURNING account_id, amount, xmin
    ), reserved AS (
        UPDATE accounts a SET pending = a.pending + r.amount
          FROM (SELECT account_id, sum(amount) AS amount FROM added GROUP BY account_id) r
         WHERE a.id = r.account_id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM reserved) AS accounts,
           (SELECT xmin FROM added LIMIT 1) AS version
    """
    )
)
_GET = HotStatement(
    text(
        f"SELECT {_COLUMNS} FROM holds WHERE global_tx_id = :global_tx_id AND branch_id = :branch_id"
    )
)
_GET_FOR_UPDATE = HotStatement(
    text(
        f"SELECT {_COLUMNS} FROM holds WHERE global_tx_id = :global_tx_id AND branch_id = :branch_id"
        " FOR UPDATE"
    )
)
# A group of Trys: every barrier row (the platform's insert-first), then - only after every insert
# is done, as a Try on its own orders them - every account to reserve on locked in id order and
# read with its lock (a locking read returns the newest committed row): one round trip.
_TRY_AND_LOCK = HotStatement(
    text(
        f"""
    WITH entered AS ({insert_many_sql(tcc_barriers.name)}),
    locked AS MATERIALIZED (
        SELECT CAST(id AS text) AS id, posted, pending, shards > 0 AS sharded FROM accounts
         WHERE id = ANY(CAST(:account_ids AS uuid[]))
           AND (SELECT count(*) FROM entered) >= 0
         ORDER BY id
           FOR NO KEY UPDATE
    )
    SELECT ARRAY(SELECT global_tx_id FROM entered) AS entered_global_tx_ids,
           ARRAY(SELECT branch_id FROM entered) AS entered_branch_ids,
           ARRAY(SELECT id FROM locked ORDER BY id) AS ids,
           ARRAY(SELECT posted FROM locked ORDER BY id) AS posted,
           ARRAY(SELECT pending FROM locked ORDER BY id) AS pending,
           ARRAY(SELECT sharded FROM locked ORDER BY id) AS sharded
    """
    )
)


# A group of Confirms (or of Cancels: the statement binds its op): the hold of every branch
# locked in key order (one index probe each, LATERAL, as in _confirm_alone_statement), and only
# then every barrier row; one round trip, one line per inserted branch (hold columns null if
# none). The one-statement Confirm locks the hold before it inserts its barrier row (last, and
# only if everything applies); inserted first here, a twin Confirm (the same hold, in another
# group: another replica's, or one that runs checked) on the one-statement path held the hold and
# waited for this barrier row while this group waited for the hold: a deadlock, PostgreSQL
# aborting one after deadlock_timeout and its group run again (issue 13). Locked first, the later
# twin waits for the hold and then finds the first one's barrier row (a replay). Locking a
# replayed branch's hold too changes no outcome. So for a Cancel (after the Trys' rows it writes,
# `_enter_cancels`): a Cancel of a later round of a group holding the hold (a refused Confirm of
# it before) waited for its twin's barrier row, the twin (another group, a CancelHold) for the
# hold.
# The holds locked are those of `keys`: the barrier's own ("barrier_") or a list of their own
# ("lock_", `cancel_and_lock`'s `also_lock`): a ResolveHolds round that cancels and confirms
# locks its Confirms' holds with its Cancels', all in key order, in this one statement. Locked by
# two statements (the Cancels' holds, then the Confirms'), two batches resolving the same two
# holds the opposite ways (A confirmed and B cancelled, A cancelled and B confirmed) each held
# one and waited for the other: a deadlock (issue 13). The Confirms' statement that follows locks
# holds this transaction holds already (no wait) and returns them. A later round of Confirms
# passes "lock_" too: it locks no hold its branch's earlier Confirm found missing (a Try that
# committed since made it; locked then, after the earlier rounds' rows, a deadlock), only the
# holds its first round locked already (`grouped_holds._unseen_holds`).
def _lock_and_enter_statement(keys: str) -> HotStatement:
    return HotStatement(
        text(
            f"""
    WITH locked AS MATERIALIZED (
        SELECT h.* FROM (
               SELECT * FROM unnest(
                   {listed(keys + "global_tx_ids", "text")}, {listed(keys + "branch_ids", "text")})
                   AS k(global_tx_id, branch_id)
                ORDER BY global_tx_id, branch_id OFFSET 0) k
         CROSS JOIN LATERAL (
               SELECT {_COLUMNS} FROM holds h
                WHERE h.global_tx_id = k.global_tx_id AND h.branch_id = k.branch_id
                  FOR UPDATE) h
    ), entered AS ({insert_many_sql(tcc_barriers.name, only_if="(SELECT count(*) FROM locked) >= 0")})
    SELECT e.global_tx_id AS entered_global_tx_id, e.branch_id AS entered_branch_id,
           l.global_tx_id IS NOT NULL AS held, l.*
      FROM entered e
      LEFT JOIN locked l ON l.global_tx_id = e.global_tx_id AND l.branch_id = e.branch_id
    """
        )
    )


_LOCK_AND_ENTER = _lock_and_enter_statement("barrier_")
_LOCK_ALSO_AND_ENTER = _lock_and_enter_statement("lock_")
# A group of Trys as ONE statement that is its own transaction (the common case: distinct
# branches, no sharded account to reserve on): every barrier row (the platform's insert-first),
# then - only after every insert is done, as a Try on its own orders them - every account to
# reserve on locked in id order, then the hold of each branch inserted and its account's pending
# balance. The no-overdraft rule is the accounts' own check (ck_accounts_no_overdraft: posted -
# pending >= 0 unless the account may go negative or is sharded), evaluated on the newest row
# under the lock: a hold only raises pending, so the group's holds on an account fit in any order
# exactly when all of them fit together. If one does not, the statement fails and writes nothing,
# and the caller runs the group checked (each Try judged in order, the refused ones alone). The
# barrier rows are read first (by key) and the branches without one inserted plainly
# (`read_first`): a speculative insertion's third WAL record per row was one of a Reserve's 8; a
# twin still in flight, which ON CONFLICT waited for and skipped, now fails the statement on the
# barrier's key after waiting for it, and the group runs checked (issue 13).
_RESERVE_ALONE = HotStatement(
    text(
        f"""
    WITH entered AS ({insert_many_sql(tcc_barriers.name, skip_conflicts=False, read_first=True)}),
    locked AS MATERIALIZED (
        SELECT id FROM accounts
         WHERE id = ANY({listed("lock_ids", "uuid")})
           AND (SELECT count(*) FROM entered) >= 0
         ORDER BY id
           FOR NO KEY UPDATE
    ), added AS (
        INSERT INTO holds ({_COLUMNS})
        {_new_holds("barrier_")}
          JOIN entered e ON e.global_tx_id = h.global_tx_id AND e.branch_id = h.branch_id
         WHERE (SELECT count(*) FROM locked) >= 0
        RETURNING account_id, amount, xmin
    ), reserved AS (
        UPDATE accounts a SET pending = a.pending + r.amount
          FROM (SELECT account_id, sum(amount) AS amount FROM added GROUP BY account_id) r
         WHERE a.id = r.account_id
        RETURNING 1
    )
    SELECT ARRAY(SELECT global_tx_id FROM entered) AS entered_global_tx_ids,
           ARRAY(SELECT branch_id FROM entered) AS entered_branch_ids,
           (SELECT count(*) FROM added) AS added,
           (SELECT count(*) FROM reserved) AS accounts,
           (SELECT xmin FROM added LIMIT 1) AS version
    """
    )
)
_NO_OVERDRAFT = "ck_accounts_no_overdraft"
# The keys a one-statement group may fail on, writing nothing, and then run checked: a branch
# whose barrier row a twin in flight inserted (a Reserve) or that has its Confirm row already, a
# Confirm's transfer id taken (_RESERVE_ALONE, _CONFIRM_ALONE).
_BARRIER_KEY = "pk_tcc_barriers"
_CONFIRM_KEYS = (_BARRIER_KEY, "pk_transfers")


# A group of Confirms as ONE statement that is its own transaction (the common case: distinct
# branches whose holds this process reserved, none debiting a sharded account). The caller
# planned each Confirm's transfer on the hold as it was reserved; the statement applies only if
# every hold is, under its lock, still that pending, unexpired hold:
#  1. lock the holds (key order) and compare each row's version (xmin) with the one its Reserve
#     wrote: every change of a hold (resolved, expired, a Try rolled back and the branch reserved
#     again, by any replica) writes a new row version, with the xid of another transaction
#     (freezing keeps the raw xmin; only an xid reused after 2^32 transactions could match, and
#     state and expiry are compared too). Each hold is looked up by its key (LATERAL, one index
#     probe per Confirm) whatever the table's statistics: as joins, the generic plan a
#     connection made while the tables looked tiny (and then kept) hashed the group against
#     every hold and every Confirm barrier row ever written, on each call (issue 13);
#  2. then the run of transfers (post_run_ctes: lock the account rows in id order, judge, claim
#     the transfer ids, apply each account's and shard's net change, write the entries), gated by
#     step 1; a Confirm never lowers its account's availability, so its posting is never refused;
#     its transfer id claimed without ON CONFLICT (a pending hold's Confirm id is untaken: if it
#     were, by a Transfer naming it, the statement fails on the key and writes nothing - with ON
#     CONFLICT it had saved the hold with no transfer of its own and raised);
#  3. only if everything applies: the Confirms' barrier rows (the platform's insert-first with its
#     `only_if`, here after the hold locks so that it can be conditional) and the holds saved as
#     confirmed. The rows go in without ON CONFLICT: a pending hold's branch has no Confirm row
#     (a refused Confirm deletes its own), and if one had, the statement fails on the barrier's
#     key and writes nothing. Probed for first (a LATERAL read per Confirm) and inserted, as the
#     transfer, by speculative insertion (the key probed again, a WAL record to confirm it),
#     they cost ~8 of a Confirm's ~58 buffer hits and 2 of its 24 WAL records (issue 13).
# Otherwise nothing at all is written and the caller runs the group checked (barrier rows, locks,
# each Confirm answered on its own). Locks: holds, then account rows, then shards, then barrier
# rows; a twin Confirm in flight on the checked path locks the hold before its barrier row too
# (_LOCK_AND_ENTER), so the later of the two waits for the hold, then finds the first one's row.
# Each hold's key is its barrier row's and its transfer id its Confirm's (the same order), so
# the statement binds those arrays once (a name bound twice is one parameter).
_CONFIRMS_ENTERED = insert_many_sql(
    tcc_barriers.name, only_if="(SELECT ok FROM verdict)", skip_conflicts=False
)


def _confirm_alone_statement(*, shards: bool) -> HotStatement:
    return HotStatement(
        text(
            f"""
    WITH expected AS (
        SELECT * FROM unnest(
            {listed("barrier_global_tx_ids", "text")}, {listed("barrier_branch_ids", "text")},
            {listed("hold_versions", "xid")}, {listed("hold_confirmed_amounts", "bigint")},
            {listed("ids", "text")})
            AS x(global_tx_id, branch_id, version, confirmed_amount, transfer_id)
    ), held AS MATERIALIZED (
        SELECT h.xmin = x.version AND h.state = 'pending'
               AND h.expires_at > CAST(:now AS timestamptz) AS fine
          FROM (SELECT * FROM expected ORDER BY global_tx_id, branch_id OFFSET 0) x
         CROSS JOIN LATERAL (
               SELECT h.xmin, h.state, h.expires_at FROM holds h
                WHERE h.global_tx_id = x.global_tx_id AND h.branch_id = x.branch_id
                  FOR UPDATE) h
    ), holds_ok AS (
        SELECT count(*) FILTER (WHERE fine) = cardinality({listed("barrier_global_tx_ids", "text")})
               AS ok
          FROM held
    ),"""
            + ledger_sql.post_run_ctes(
                after="(SELECT count(*) FROM held) >= 0",
                gate="(SELECT ok FROM holds_ok)",
                shards=shards,
                skip_taken=False,
            )
            + f""",
    entered AS ({_CONFIRMS_ENTERED}),
    saved AS (
        UPDATE holds h
           SET state = 'confirmed', confirmed_amount = x.confirmed_amount,
               transfer_id = x.transfer_id, resolved_at = CAST(:now AS timestamptz)
          FROM expected x
         WHERE h.global_tx_id = x.global_tx_id AND h.branch_id = x.branch_id
           AND (SELECT ok FROM verdict)
           AND (SELECT count(*) FROM written) >= 0
        RETURNING 1
    )
    SELECT (SELECT ok FROM verdict) AS ok,
           ARRAY(SELECT id FROM claimed) AS claimed,
           (SELECT min(created_at) FROM claimed) AS created_at,
           (SELECT count(*) FROM rows_changed) AS rows_changed,
           (SELECT count(*) FROM shards_changed) AS shards_changed,
           ARRAY(SELECT id FROM written ORDER BY id) AS entry_ids,
           (SELECT count(*) FROM entered) AS entered,
           (SELECT count(*) FROM saved) AS saved
    """
        )
    )


_CONFIRM_ALONE = _confirm_alone_statement(shards=True)
_CONFIRM_ALONE_NO_SHARDS = _confirm_alone_statement(shards=False)


_HoldFields = tuple[
    TccBranch,
    str,
    str,
    str,
    int,
    datetime,
    datetime,
    str,
    HoldState,
    int,
    str | None,
    datetime | None,
]


class PendingHolds:
    """Process-wide memory of the holds this replica reserved, as reserved (pending), each with
    the version (xmin) of the row its Reserve wrote, so that a Confirm can be planned before any
    round trip. Never trusted: the statement that confirms compares every hold's version with its
    locked row and writes nothing if one differs (resolved, expired, another replica's, a Try that
    rolled back). Bounded; a forgotten hold costs the checked path."""

    def __init__(self, max_entries: int = 100_000) -> None:
        # Each hold as the tuple of its fields (in Hold's order), so that remembering is no call
        # and recalling one (a new Hold of them); dataclasses.replace, twice per hold, was ~40
        # Python calls of a Reserve + Confirm (issue 13).
        self._holds: dict[TccBranch, tuple[_HoldFields, int]] = {}
        self._max = max_entries

    def remember(self, holds: Sequence[Hold], version: int) -> None:
        if len(self._holds) + len(holds) > self._max:
            self._holds.clear()
        for h in holds:
            fields = (
                h.branch,
                h.account_id,
                h.destination_account_id,
                h.unit,
                h.amount,
                h.expires_at,
                h.created_at,
                h.description,
                h.state,
                h.confirmed_amount,
                h.transfer_id,
                h.resolved_at,
            )
            self._holds[h.branch] = (fields, version)

    def recall(self, branch: TccBranch) -> tuple[Hold, int] | None:
        """A copy of the hold (the caller may resolve it) and its row version, read together."""
        known = self._holds.get(branch)
        return None if known is None else (Hold(*known[0]), known[1])

    def forget(self, branches: Collection[TccBranch]) -> None:
        for branch in branches:
            self._holds.pop(branch, None)


PENDING_HOLDS = PendingHolds()
_SAVE = HotStatement(
    text(
        f"""
    UPDATE holds h
       SET state = c.state, confirmed_amount = c.confirmed_amount, transfer_id = c.transfer_id,
           resolved_at = c.resolved_at
      FROM unnest(
           {listed("global_tx_ids", "text")}, {listed("branch_ids", "text")}, CAST(:states AS text[]),
           CAST(:confirmed_amounts AS bigint[]), CAST(:transfer_ids AS text[]),
           CAST(:resolved_at AS timestamptz[]))
           AS c(global_tx_id, branch_id, state, confirmed_amount, transfer_id, resolved_at)
     WHERE h.global_tx_id = c.global_tx_id AND h.branch_id = c.branch_id
    """
    )
)


def _constraint(error: IntegrityError) -> str | None:
    """The name of the constraint a statement violated (asyncpg's error under SQLAlchemy's)."""
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str):
            return name
    return None


def _hold_from_row(row: Any) -> Hold:
    return Hold(
        branch=TccBranch(row.global_tx_id, row.branch_id),
        account_id=str(row.account_id),
        destination_account_id=str(row.destination_account_id),
        unit=row.unit,
        amount=row.amount,
        expires_at=row.expires_at,
        created_at=row.created_at,
        description=row.description,
        state=HoldState(row.state),
        confirmed_amount=row.confirmed_amount,
        transfer_id=row.transfer_id,
        resolved_at=row.resolved_at,
    )


def _branch_params(branches: Sequence[TccBranch]) -> dict[str, str]:
    """The branches' ids as one comma-joined string each, as the barrier binds them
    (hirepay_platform.barrier.insert_many_params): validated ids hold no comma."""
    return {
        "global_tx_ids": joined_checked([b.global_tx_id for b in branches]),
        "branch_ids": joined_checked([b.branch_id for b in branches]),
    }


def _lock_params(branches: Collection[TccBranch]) -> dict[str, str]:
    """_LOCK_ALSO_AND_ENTER's holds to lock (it orders them itself)."""
    locked = list(branches)
    return {
        "lock_global_tx_ids": joined_checked([b.global_tx_id for b in locked]),
        "lock_branch_ids": joined_checked([b.branch_id for b in locked]),
    }


_KEY = attrgetter("global_tx_id", "branch_id")


def _key_order(branches: Sequence[TccBranch]) -> list[int]:
    """The positions of `branches` in key order. A statement inserts its barrier rows in the
    order of its arrays, and two groups inserting the same branches in opposite orders (a group
    of Trys and a batch cancelling them listed the other way round, both in flight) each inserted
    one row and waited for the other's: a deadlock (issue 13). Every group inserts them in this
    one order. (Sorted in C, by attrgetter and list indexing: no Python call per branch on the
    grouped Reserve's hot path.)"""
    keys = list(map(_KEY, branches))
    return sorted(range(len(keys)), key=keys.__getitem__)


def _in_key_order(
    calls: Sequence[tuple[TccBranch, Fingerprint]],
) -> list[tuple[TccBranch, Fingerprint]]:
    """Calls in their branches' key order (`_key_order`)."""
    return [calls[i] for i in _key_order([b for b, _ in calls])]


def _new_hold_params(holds: Sequence[Hold], *, keys: bool = True) -> dict[str, Any]:
    """_new_holds' parameters: what differs between new holds (made at one `now`); without
    `keys` for the statement that binds the barrier's. Built in one loop (a comprehension and a
    `joined` per list were 12 Python calls per statement; issue 13), joined as `joined` joins."""
    account_ids: list[str] = []
    destinations: list[str] = []
    units: list[str] = []
    amounts: list[int] = []
    expires_at: list[datetime] = []
    descriptions: list[str] = []
    for hold in holds:
        account_ids.append(hold.account_id)
        destinations.append(hold.destination_account_id)
        units.append(hold.unit)
        amounts.append(hold.amount)
        expires_at.append(hold.expires_at)
        descriptions.append(hold.description)
    join = ",".join
    return {
        **(_branch_params([h.branch for h in holds]) if keys else {}),
        "account_ids": join(map(str, account_ids)),
        "destination_account_ids": join(map(str, destinations)),
        "units": join(map(str, units)),
        "amounts": join(map(str, amounts)),
        "expires_at": expires_at,
        "descriptions": quoted_list(descriptions),  # free text: may hold commas
        "created_at": holds[0].created_at,
    }


def _hold_params(holds: Sequence[Hold]) -> dict[str, Any]:
    """_ADD's parameters: every column of each hold (any state), one array each."""
    return {
        **_new_hold_params(holds),
        "confirmed_amounts": [h.confirmed_amount for h in holds],
        "states": [h.state.value for h in holds],
        "transfer_ids": [h.transfer_id for h in holds],
        "created_at": [h.created_at for h in holds],
        "resolved_at": [h.resolved_at for h in holds],
    }


class SqlHoldRepository:
    """Holds on the unit of work's session, read as plain rows (so a re-read is never stale);
    never commits."""

    def __init__(self, session: AsyncSession, pending: PendingHolds = PENDING_HOLDS) -> None:
        self._session = session
        self._pending = pending
        # The row version of each hold recalled by this unit of work, as read with the hold.
        self._versions: dict[TccBranch, int] = {}

    async def add(self, hold: Hold) -> None:
        await self.add_many([hold])

    async def add_many(self, holds: Sequence[Hold]) -> None:
        if holds:
            await self._session.execute(_ADD, _hold_params(holds))

    async def add_reserved(self, holds: Sequence[Hold]) -> None:
        if not holds:
            return
        row = (await self._session.execute(_ADD_RESERVED, _new_hold_params(holds))).one()
        if row.added != len(holds) or row.accounts != len({h.account_id for h in holds}):
            # A missing account row: never expected (the caller locked every one).
            raise RuntimeError("reservation applied partially")
        self._pending.remember(holds, row.version)

    async def reserve_alone(
        self, calls: Sequence[tuple[TccBranch, Fingerprint]], holds: Sequence[Hold]
    ) -> set[TccBranch] | None:
        # The holds zipped with their barrier rows (the statement binds their keys once), both in
        # key order.
        if len(calls) > 1:
            order = _key_order([b for b, _ in calls])
            calls = [calls[i] for i in order]
            holds = [holds[i] for i in order]
        params: dict[str, Any] = {
            **insert_many_params(
                [b for b, _ in calls], TccOp.TRY, TccOp.TRY, [f for _, f in calls]
            ),
            **_new_hold_params(holds, keys=False),
            "lock_ids": joined(sorted({h.account_id for h in holds})),
        }
        row = await self._alone(_RESERVE_ALONE, params, (_NO_OVERDRAFT, _BARRIER_KEY))
        if row is None:
            return None
        entered = {
            TccBranch(g, b)
            for g, b in zip(row.entered_global_tx_ids, row.entered_branch_ids, strict=True)
        }
        wanted = [h for h in holds if h.branch in entered]
        if row.added != len(wanted) or row.accounts != len({h.account_id for h in wanted}):
            # A missing account row: never expected (the caller found every one). Committed.
            raise RuntimeError("reservation applied partially")
        if wanted:
            self._pending.remember(wanted, row.version)
        return entered

    async def _alone(
        self, statement: HotStatement, params: dict[str, Any], fallbacks: Collection[str]
    ) -> Any:
        """The one row of a statement that is its own transaction (execute_alone); None if it
        failed on one of the constraints `fallbacks` names: it rolled back whole, nothing was
        written, and the caller runs its group checked."""
        try:
            return (await execute_alone(self._session, statement, params)).one()
        except IntegrityError as exc:
            if _constraint(exc) not in fallbacks:
                raise
            await self._session.rollback()
            return None

    def recall(self, branch: TccBranch) -> Hold | None:
        known = self._pending.recall(branch)
        if known is None:
            return None
        hold, self._versions[branch] = known
        return hold

    async def confirm_alone(
        self,
        confirms: Sequence[tuple[Hold, Fingerprint]],
        items: Sequence[tuple[TransferHeader, Posting]],
        now: datetime,
    ) -> list[PostOutcome] | None:
        holds = [hold for hold, _ in confirms]
        branches = [hold.branch for hold in holds]
        versions = [self._versions.get(b) for b in branches]
        if None in versions:  # not recalled by this unit of work: nothing to compare with
            return None
        params = {
            **run_params(items),
            **insert_many_params(branches, TccOp.CONFIRM, TccOp.CONFIRM, [f for _, f in confirms]),
            # Each hold's row version as the plan was made on it, and its confirmed amount.
            "hold_versions": joined(versions),
            "hold_confirmed_amounts": joined([h.confirmed_amount for h in holds]),
            "now": now,
        }
        statement = _CONFIRM_ALONE if changes_shards(items) else _CONFIRM_ALONE_NO_SHARDS
        row = await self._alone(statement, params, _CONFIRM_KEYS)
        if row is None or not row.ok:
            return None
        outcomes = run_outcomes(items, row)
        if (
            row.entered != len(holds)
            or row.saved != len(holds)
            or not all([o.claimed for o in outcomes])
        ):
            # Never expected: a pending hold has no Confirm barrier row nor transfer yet.
            raise RuntimeError("confirmations applied partially")
        self._pending.forget(branches)
        return outcomes

    async def get(self, branch: TccBranch, *, for_update: bool = False) -> Hold | None:
        statement = _GET_FOR_UPDATE if for_update else _GET
        params = {"global_tx_id": branch.global_tx_id, "branch_id": branch.branch_id}
        row = (await self._session.execute(statement, params)).one_or_none()
        return _hold_from_row(row) if row else None

    async def try_and_lock(
        self,
        calls: Sequence[tuple[TccBranch, Fingerprint]],
        account_ids: Collection[str],
    ) -> tuple[set[TccBranch], dict[str, Balance], list[str]]:
        calls = _in_key_order(calls)
        params = insert_many_params(
            [b for b, _ in calls], TccOp.TRY, TccOp.TRY, [f for _, f in calls]
        )
        params["account_ids"] = sorted(account_ids)
        row = (await self._session.execute(_TRY_AND_LOCK, params)).one()
        entered = {
            TccBranch(g, b)
            for g, b in zip(row.entered_global_tx_ids, row.entered_branch_ids, strict=True)
        }
        balances = {
            a: Balance(posted, pending)
            for a, posted, pending in zip(row.ids, row.posted, row.pending, strict=True)
        }
        sharded = [a for a, flag in zip(row.ids, row.sharded, strict=True) if flag]
        return entered, balances, sharded

    async def confirm_and_lock(
        self,
        calls: Sequence[tuple[TccBranch, Fingerprint]],
        lock: Collection[TccBranch] | None = None,
    ) -> tuple[set[TccBranch], dict[TccBranch, Hold]]:
        calls = _in_key_order(calls)
        params = insert_many_params(
            [b for b, _ in calls], TccOp.CONFIRM, TccOp.CONFIRM, [f for _, f in calls]
        )
        if lock is None:
            return await self._enter_and_lock(_LOCK_AND_ENTER, params)
        return await self._enter_and_lock(_LOCK_ALSO_AND_ENTER, {**params, **_lock_params(lock)})

    async def cancel_and_lock(
        self, branches: Sequence[TccBranch], also_lock: Collection[TccBranch] = ()
    ) -> tuple[set[TccBranch], dict[TccBranch, Hold]]:
        branches = sorted(branches, key=_KEY)
        # A Cancel's barrier row has no fingerprint: a repeat is a replay whatever its reason.
        params = insert_many_params(branches, TccOp.CANCEL, TccOp.CANCEL, [{}] * len(branches))
        if not also_lock:
            return await self._enter_and_lock(_LOCK_AND_ENTER, params)
        locked = {*branches, *also_lock}  # (the statement locks them in key order)
        return await self._enter_and_lock(_LOCK_ALSO_AND_ENTER, {**params, **_lock_params(locked)})

    async def _enter_and_lock(
        self, statement: HotStatement, params: dict[str, Any]
    ) -> tuple[set[TccBranch], dict[TccBranch, Hold]]:
        rows = (await self._session.execute(statement, params)).all()
        entered = {TccBranch(r.entered_global_tx_id, r.entered_branch_id) for r in rows}
        holds = (_hold_from_row(r) for r in rows if r.held)
        return entered, {hold.branch: hold for hold in holds}

    async def save(self, holds: Collection[Hold]) -> None:
        if not holds:
            return
        holds = list(holds)
        await self._session.execute(
            _SAVE,
            {
                **_branch_params([h.branch for h in holds]),
                "states": [h.state.value for h in holds],
                "confirmed_amounts": [h.confirmed_amount for h in holds],
                "transfer_ids": [h.transfer_id for h in holds],
                "resolved_at": [h.resolved_at for h in holds],
            },
        )

    async def lock_expired(self, now: datetime, limit: int) -> list[Hold]:
        query = (
            select(H)
            # literal: its partial index serves the worker's generic plan too
            .where(HOLD_IS_PENDING, H.c.expires_at <= now)
            .order_by(H.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_hold_from_row(row) for row in await self._session.execute(query)]
