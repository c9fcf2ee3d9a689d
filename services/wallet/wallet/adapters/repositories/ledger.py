"""PostgreSQL repository of the ledger: transfers and entries, and the one-statement posting.

Hot paths are single statements with array parameters (the statement text does not depend on the
number of legs, so asyncpg's prepared-statement cache serves every call).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, Result, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform import jsonb
from hirepay_platform.db import HotStatement, execute_alone
from hirepay_platform.fingerprint import fingerprint
from hirepay_platform.sql_lists import joined, quoted_list
from wallet.adapters.repositories import ledger_sql as sql
from wallet.adapters.tables import entries as E
from wallet.adapters.tables import transfers as T
from wallet.domain.ledger import Entry, Posting, TransferRecord, change_allowed
from wallet.domain.model import Balance
from wallet.service_layer.ports import PostOutcome, StoredTransfer, TransferHeader


def _entry_from_row(row: Any, description: str) -> Entry:
    return Entry(
        id=row.id,
        transfer_id=row.transfer_id,
        account_id=str(row.account_id),
        unit=row.unit,
        amount=row.amount,
        created_at=row.created_at,
        description=description,
    )


# The statements of a transfer, each run hot (db.HotStatement): past SQLAlchemy's execution once
# warm (issue 13).
_POST, _POST_RUN, _POST_RUN_NO_SHARDS, _CLAIM_AND_LOCK, _APPLY_MANY = map(
    HotStatement,
    (sql.POST, sql.POST_RUN, sql.POST_RUN_NO_SHARDS, sql.CLAIM_AND_LOCK, sql.APPLY_MANY),
)
_LOCK_ACCOUNTS, _READ_BALANCES, _LOCK_SHARDS, _CLAIM_AHEAD = map(
    HotStatement, (sql.LOCK_ACCOUNTS, sql.READ_BALANCES, sql.LOCK_SHARDS, sql.CLAIM_AHEAD)
)


async def _execute(
    session: AsyncSession, statement: Executable | HotStatement, params: Mapping[str, Any]
) -> Result[Any]:
    return await session.execute(statement, params)


# A transfer row keeps of its request's fingerprint only the digests its own columns cannot give
# back: a Transfer's or SplitTransfer's operation is its kind's, and its description and metadata
# digests are those of the row's description and metadata (stored as given: validation refuses,
# never rewrites). A grouped transfer's row was ~150 bytes longer for them: ~9% of a group's WAL
# (issue 13). `_full_print` puts them back when the row is read (a replay); a row written with
# every digest (before) reads the same. A hold's transfer row (a Confirm's) keeps them all.
_OPERATIONS = {"transfer": "Transfer", "split": "SplitTransfer"}
_FROM_COLUMNS = ("operation", "description", "metadata")


def _stored_print(header: TransferHeader) -> dict[str, str]:
    """The digests a transfer row stores (see _OPERATIONS)."""
    print_ = dict(header.fingerprint)
    if header.kind in _OPERATIONS:
        for name in _FROM_COLUMNS:
            print_.pop(name, None)
    return print_


def _full_print(kind: str, description: str, metadata: Mapping[str, str], stored: Any) -> dict:
    """A stored transfer's request fingerprint: the stored digests, with those its row gives."""
    operation = _OPERATIONS.get(kind)
    if operation is None:
        return dict(stored)
    derived = fingerprint(
        {"operation": operation, "description": description, "metadata": dict(metadata)}
    )
    return {**derived, **stored}


def _metadata_json(metadata: Mapping[str, str]) -> str:
    """A transfer's metadata as the JSON its jsonb column takes; most transfers have none (a
    json.dumps is ~5 Python calls per transfer; issue 13), the others written by jsonb.dumps (the
    same text in one call)."""
    return jsonb.dumps(dict(metadata)) if metadata else "{}"


def _headers(items: Sequence[tuple[TransferHeader, Posting]]) -> dict[str, Any]:
    """The transfer rows a run claims, as the array parameters of its claim (ids and kinds
    joined by commas as `sql_lists.joined` joins them: a transfer id has no comma, see
    validate_client_id and confirm_transfer_id; the descriptions and JSON documents, which may
    hold one, `quoted_list`). One loop over the items: a comprehension and a `joined` per column
    were two Python calls each, per statement (issue 13)."""
    ids: list[str] = []
    kinds: list[str] = []
    descriptions: list[str] = []
    metadata: list[str] = []
    fingerprints: list[str] = []
    for header, _ in items:
        ids.append(header.id)
        kinds.append(header.kind)
        descriptions.append(header.description)
        # _metadata_json, inline (most transfers have none).
        metadata.append(jsonb.dumps(dict(header.metadata)) if header.metadata else "{}")
        # _stored_print, inline (no Python call per transfer).
        print_ = dict(header.fingerprint)
        if header.kind in _OPERATIONS:
            for name in _FROM_COLUMNS:
                print_.pop(name, None)
        fingerprints.append(jsonb.dumps(print_))
    return {
        "ids": ",".join(map(str, ids)),
        "kinds": ",".join(map(str, kinds)),
        "descriptions": quoted_list(descriptions),
        "metadata": quoted_list(metadata),
        "fingerprints": quoted_list(fingerprints),
    }


def _check_run(items: Sequence[tuple[TransferHeader, Posting]]) -> None:
    """A run posted set-based: distinct ids, no guarded debit of a sharded account."""
    # (A list: one Python call, where a generator was one per posting.)
    if any([posting.guarded_sharded for _, posting in items]):
        raise ValueError("a guarded debit of a sharded account needs the checked slow path")
    if len({header.id for header, _ in items}) != len(items):
        raise ValueError("a transfer id may appear once per call")


def run_params(items: Sequence[tuple[TransferHeader, Posting]]) -> dict[str, Any]:
    """The parameters of a run of postings (POST_RUN, or a statement made with post_run_ctes):
    every list joined by commas as `sql_lists.joined` joins it, built in one loop over the
    items (a comprehension and a `joined` per list were 30 Python calls per statement, the
    most of a lone transfer's repository work; issue 13)."""
    row_items: list[int] = []
    row_ids: list[str] = []
    row_posted: list[int] = []
    row_pending: list[int] = []
    shard_items: list[int] = []
    shard_ids: list[str] = []
    shard_nos: list[int] = []
    shard_posted: list[int] = []
    entry_items: list[int] = []
    entry_accounts: list[str] = []
    entry_units: list[str] = []
    entry_amounts: list[int] = []
    for n, (_, posting) in enumerate(items, 1):
        for change in posting.row_changes:
            row_items.append(n)
            row_ids.append(change.account_id)
            row_posted.append(change.posted)
            row_pending.append(change.pending)
        for shard in posting.shard_changes:
            shard_items.append(n)
            shard_ids.append(shard.account_id)
            shard_nos.append(shard.shard)
            shard_posted.append(shard.posted)
        for line in posting.entries:
            entry_items.append(n)
            entry_accounts.append(line.account_id)
            entry_units.append(line.unit)
            entry_amounts.append(line.amount)
    join = ",".join
    return {
        **_headers(items),
        "account_ids": join(map(str, sorted(set(row_ids)))),
        "row_items": join(map(str, row_items)),
        "row_ids": join(map(str, row_ids)),
        "row_posted": join(map(str, row_posted)),
        "row_pending": join(map(str, row_pending)),
        "shard_items": join(map(str, shard_items)),
        "shard_ids": join(map(str, shard_ids)),
        "shard_nos": join(map(str, shard_nos)),
        "shard_posted": join(map(str, shard_posted)),
        "entry_items": join(map(str, entry_items)),
        "entry_accounts": join(map(str, entry_accounts)),
        "entry_units": join(map(str, entry_units)),
        "entry_amounts": join(map(str, entry_amounts)),
    }


def changes_shards(items: Sequence[tuple[TransferHeader, Posting]]) -> bool:
    """Whether a run changes a shard (its statement needs the shard changes: post_run_ctes)."""
    return any([posting.shard_changes for _, posting in items])


def run_outcomes(items: Sequence[tuple[TransferHeader, Posting]], row: Any) -> list[PostOutcome]:
    """Each posting's outcome from the result row of a run that applied (its verdict ok): posted
    with its entries, or its id taken (claimed=False)."""
    claimed = set(row.claimed)
    live = [(h, p) for h, p in items if h.id in claimed]
    if (
        row.rows_changed != len({c.account_id for _, p in live for c in p.row_changes})
        or row.shards_changed
        != len({(s.account_id, s.shard) for _, p in live for s in p.shard_changes})
        or len(row.entry_ids) != sum([len(p.entries) for _, p in live])
    ):
        # A missing row, never expected (alone, the statement has committed: this is loud).
        raise RuntimeError("batch applied partially")
    ids = iter(row.entry_ids)
    outcomes: list[PostOutcome] = []
    for header, posting in items:
        if header.id not in claimed:
            outcomes.append(PostOutcome(claimed=False))
            continue
        entries = tuple(
            [
                Entry(
                    id=next(ids),
                    transfer_id=header.id,
                    account_id=line.account_id,
                    unit=line.unit,
                    amount=line.amount,
                    created_at=row.created_at,
                    description=header.description,
                )
                for line in posting.entries
            ]
        )
        outcomes.append(PostOutcome(entries=entries, created_at=row.created_at))
    return outcomes


class SqlLedgerRepository:
    """Transfers, entries and balance changes on the unit of work's session; never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim_transfer(self, header: TransferHeader) -> datetime | None:
        # Waits for an in-flight twin with the same id to finish: then either it committed (we get
        # nothing back and replay it) or it rolled back (we insert and proceed).
        statement = (
            insert(T)
            .values(
                {
                    "id": header.id,
                    "kind": header.kind,
                    "description": header.description,
                    "metadata": dict(header.metadata),
                    "fingerprint": _stored_print(header),
                }
            )
            .on_conflict_do_nothing(index_elements=[T.c.id])
            .returning(T.c.created_at)
        )
        return (await self._session.execute(statement)).scalar_one_or_none()

    async def release_claim(self, transfer_id: str) -> None:
        # Only a transfer this transaction claimed and never posted: it has no entries (an entry
        # would make the DELETE fail on the transfers_keep_entries trigger, which is what we want).
        await self._session.execute(delete(T).where(T.c.id == transfer_id))

    async def get_transfer(self, transfer_id: str) -> StoredTransfer | None:
        row = (await self._session.execute(select(T).where(T.c.id == transfer_id))).one_or_none()
        if row is None:
            return None
        query = select(E).where(E.c.transfer_id == transfer_id).order_by(E.c.id)
        entries = tuple(
            _entry_from_row(e, row.description) for e in await self._session.execute(query)
        )
        record = TransferRecord(
            id=row.id,
            description=row.description,
            metadata=dict(row._mapping["metadata"]),
            created_at=row.created_at,
            entries=entries,
        )
        print_ = _full_print(row.kind, row.description, record.metadata, row.fingerprint)
        return StoredTransfer(record=record, kind=row.kind, fingerprint=print_)

    async def lock_balances(self, account_ids: Collection[str]) -> dict[str, Balance]:
        ids = sorted(account_ids)
        locked = (await self._session.execute(_LOCK_ACCOUNTS, {"ids": ids})).all()
        balances = {row.id: Balance(row.posted, row.pending) for row in locked}
        sharded = [row.id for row in locked if row.sharded]
        if sharded:
            rows = await self._session.execute(_READ_BALANCES, {"ids": sharded})
            balances.update({row.id: Balance(int(row.posted), row.pending) for row in rows})
        return balances

    async def lock_shards(self, shards: Collection[tuple[str, int]]) -> None:
        if shards:
            keys = sorted(shards)
            params = {"ids": [a for a, _ in keys], "shards": [n for _, n in keys]}
            await self._session.execute(_LOCK_SHARDS, params)

    async def claim_ahead(self, items: Sequence[tuple[TransferHeader, Posting]]) -> set[str]:
        first = list({header.id: (header, posting) for header, posting in reversed(items)}.values())
        keys = sorted({(s.account_id, s.shard) for _, p in items for s in p.shard_changes})
        accounts = sorted({c.account_id for _, p in items for c in p.row_changes})
        params = _headers(sorted(first, key=lambda item: item[0].id))
        params["account_ids"] = joined(accounts)
        params["shard_ids"] = joined([a for a, _ in keys])
        params["shard_nos"] = joined([n for _, n in keys])
        row = (await self._session.execute(_CLAIM_AHEAD, params)).one()
        if row.shards != len(keys):
            raise RuntimeError("a shard row is missing")  # never expected
        return set(row.claimed)

    async def post(
        self, transfer_id: str | None, posting: Posting, claim: TransferHeader | None = None
    ) -> PostOutcome:
        if (posting.entries or claim) and transfer_id is None:
            raise ValueError("entries need a transfer")
        if claim is not None and claim.id != transfer_id:
            raise ValueError("the claimed transfer must be the one posted")
        rows, shards, entries = posting.row_changes, posting.shard_changes, posting.entries
        result = await self._session.execute(
            _POST,
            {
                "claim": claim is not None,
                "kind": claim.kind if claim else None,
                "description": claim.description if claim else None,
                "metadata": _metadata_json(claim.metadata) if claim else None,
                "fingerprint": jsonb.dumps(_stored_print(claim)) if claim else None,
                "row_ids": [c.account_id for c in rows],
                "row_posted": [c.posted for c in rows],
                "row_pending": [c.pending for c in rows],
                "shard_ids": [s.account_id for s in shards],
                "shard_nos": [s.shard for s in shards],
                "shard_posted": [s.posted for s in shards],
                "transfer_id": transfer_id,
                "entry_accounts": [e.account_id for e in entries],
                "entry_units": [e.unit for e in entries],
                "entry_amounts": [e.amount for e in entries],
            },
        )
        row = result.one()
        if not row.claimed:
            return PostOutcome(claimed=False)
        if not row.ok:
            return PostOutcome(rejected=tuple(row.rejected) or ("?",))
        if row.shards_changed != len(shards) or len(row.entry_ids) != len(entries):
            raise RuntimeError("posting applied partially")  # a missing shard row: never expected
        return PostOutcome(
            created_at=row.created_at,
            entries=tuple(
                Entry(
                    id=entry_id,
                    transfer_id=transfer_id or "",
                    account_id=line.account_id,
                    unit=line.unit,
                    amount=line.amount,
                    created_at=row.created_at,
                )
                for entry_id, line in zip(row.entry_ids, entries, strict=True)
            ),
        )

    async def post_many(
        self, items: Sequence[tuple[TransferHeader, Posting]], ahead: Collection[str] = ()
    ) -> list[PostOutcome]:
        _check_run(items)
        if not items:
            return []
        account_ids = sorted({c.account_id for _, p in items for c in p.row_changes})
        to_claim = [item for item in items if item[0].id not in ahead] if ahead else items
        row = (
            await self._session.execute(
                _CLAIM_AND_LOCK,
                {**_headers(to_claim), "account_ids": joined(account_ids)},
            )
        ).one()
        # now() is the transaction's start: one creation time for every transfer of it (the ids
        # claimed ahead, by claim_ahead, were created at it too).
        claimed = {transfer_id: row.created_at for transfer_id in row.claimed}
        if ahead:
            claimed.update({h.id: row.created_at for h, _ in items if h.id in ahead})
        balances = {
            a: Balance(posted, pending)
            for a, posted, pending in zip(row.account_ids, row.posted, row.pending, strict=True)
        }
        flags = {
            a: (negative, sharded)
            for a, negative, sharded in zip(
                row.account_ids, row.allow_negative, row.sharded, strict=True
            )
        }
        outcomes, accepted, released = self._judge(items, claimed, balances, flags)
        await self._apply(items, accepted, released, outcomes, claimed)
        return [o if o is not None else PostOutcome(claimed=False) for o in outcomes]

    async def post_run_alone(
        self, items: Sequence[tuple[TransferHeader, Posting]]
    ) -> list[PostOutcome] | None:
        return await self._post_run(items, alone=True)

    async def post_run(
        self, items: Sequence[tuple[TransferHeader, Posting]]
    ) -> list[PostOutcome] | None:
        return await self._post_run(items, alone=False)

    async def _post_run(
        self, items: Sequence[tuple[TransferHeader, Posting]], *, alone: bool
    ) -> list[PostOutcome] | None:
        _check_run(items)
        if not items:
            return []
        execute = execute_alone if alone else _execute
        statement = _POST_RUN if changes_shards(items) else _POST_RUN_NO_SHARDS
        row = (await execute(self._session, statement, run_params(items))).one()
        return run_outcomes(items, row) if row.ok else None

    @staticmethod
    def _judge(
        items: Sequence[tuple[TransferHeader, Posting]],
        claimed: dict[str, datetime],
        balances: dict[str, Balance],
        flags: dict[str, tuple[bool, bool]],
    ) -> tuple[list[PostOutcome | None], list[int], list[str]]:
        """Apply the no-overdraft rule to each claimed posting in order, on running balances
        (this transaction holds every row's lock): the accepted items, the refused ids."""
        outcomes: list[PostOutcome | None] = [None] * len(items)
        accepted: list[int] = []
        released: list[str] = []
        for i, (header, posting) in enumerate(items):
            if header.id not in claimed:
                outcomes[i] = PostOutcome(claimed=False)
                continue
            refused = sorted(
                c.account_id
                for c in posting.row_changes
                if c.account_id not in balances
                or not change_allowed(
                    balances[c.account_id],
                    c,
                    allow_negative=flags[c.account_id][0],
                    sharded=flags[c.account_id][1],
                )
            )
            if refused:
                outcomes[i] = PostOutcome(rejected=tuple(refused))
                released.append(header.id)
                continue
            for c in posting.row_changes:
                b = balances[c.account_id]
                balances[c.account_id] = Balance(b.posted + c.posted, b.pending + c.pending)
            accepted.append(i)
        return outcomes, accepted, released

    async def _apply(
        self,
        items: Sequence[tuple[TransferHeader, Posting]],
        accepted: list[int],
        released: list[str],
        outcomes: list[PostOutcome | None],
        claimed: dict[str, datetime],
    ) -> None:
        """Give back the refused ids and write the accepted postings: each account row and shard
        once (their net change), every entry in order."""
        rows: dict[str, list[int]] = {}
        shards: dict[tuple[str, int], int] = {}
        entry_owners: list[tuple[int, int]] = []
        for i in accepted:
            _, posting = items[i]
            for c in posting.row_changes:
                net = rows.setdefault(c.account_id, [0, 0])
                net[0] += c.posted
                net[1] += c.pending
            for s in posting.shard_changes:
                shards[(s.account_id, s.shard)] = shards.get((s.account_id, s.shard), 0) + s.posted
            entry_owners += [(i, k) for k in range(len(posting.entries))]
        row_ids = sorted(rows)
        shard_keys = sorted(shards)
        entries = [items[i][1].entries[k] for i, k in entry_owners]
        result = await self._session.execute(
            _APPLY_MANY,
            {
                "released": released,
                "row_ids": row_ids,
                "row_posted": [rows[a][0] for a in row_ids],
                "row_pending": [rows[a][1] for a in row_ids],
                "shard_ids": [a for a, _ in shard_keys],
                "shard_nos": [n for _, n in shard_keys],
                "shard_posted": [shards[k] for k in shard_keys],
                "entry_transfers": [items[i][0].id for i, _ in entry_owners],
                "entry_accounts": [e.account_id for e in entries],
                "entry_units": [e.unit for e in entries],
                "entry_amounts": [e.amount for e in entries],
            },
        )
        row = result.one()
        if (
            row.released != len(released)
            or row.rows_changed != len(row_ids)
            or row.shards_changed != len(shard_keys)
            or len(row.entry_ids) != len(entries)
        ):
            raise RuntimeError("batch applied partially")  # a missing row: never expected
        written: dict[int, list[Entry]] = {i: [] for i in accepted}
        for entry_id, (i, _), line in zip(row.entry_ids, entry_owners, entries, strict=True):
            header = items[i][0]
            written[i].append(
                Entry(
                    id=entry_id,
                    transfer_id=header.id,
                    account_id=line.account_id,
                    unit=line.unit,
                    amount=line.amount,
                    created_at=claimed[header.id],
                )
            )
        for i in accepted:
            header = items[i][0]
            outcomes[i] = PostOutcome(entries=tuple(written[i]), created_at=claimed[header.id])

    async def list_entries(self, account_id: str, before_id: int | None, limit: int) -> list[Entry]:
        query = (
            select(E, T.c.description.label("transfer_description"))
            .join(T, T.c.id == E.c.transfer_id)
            .where(E.c.account_id == account_id)
        )
        if before_id is not None:
            query = query.where(E.c.id < before_id)
        rows = await self._session.execute(query.order_by(E.c.id.desc()).limit(limit))
        return [_entry_from_row(row, row.transfer_description) for row in rows]
