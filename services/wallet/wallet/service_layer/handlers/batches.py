"""Use case of a batch of transfers: many independent transfers in one local transaction, each with
its own outcome (the CreateTransfers RPC, and concurrent Transfer calls grouped by the batcher).

One transaction per batch means one WAL flush for all of them instead of one each. In the common
case (distinct ids, no posting that could be refused) the batch is ONE statement that is its own
transaction (the repository's `post_run_alone`: one round trip, no BEGIN or COMMIT of its own);
otherwise it is posted checked, set-based, in a transaction that first locks every account row
of the batch in id order, claims every id in id order and locks every shard it may change
(`claim_ahead`), then posts it run by run (`post_many`: claim the ids not claimed yet, lock every
account row once, judge each posting in order, apply each account's net change once). A
transfer refused by a business rule fails alone: a refused posting changes no balance (every
account row is judged before any is changed) and its claimed id is given back. A lost race
(deadlock) aborts the whole transaction: nothing was committed, so the batch is run again;
transfer ids keep every retry idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Sized
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from hirepay_platform.errors import Conflict, HirepayError
from wallet.domain import commands
from wallet.domain.errors import InsufficientFunds, invalid
from wallet.domain.ledger import Leg, Posting, entries_for_legs, plan_posting
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.common import apply_posting, transfer_record
from wallet.service_layer.handlers.transfers import (
    TransferResult,
    replay_transfer,
    transfer_header,
)
from wallet.service_layer.ports import PostOutcome, TransferHeader, WalletUnitOfWork

# Items per batch call (CreateTransfers, CreateHolds, ResolveHolds): all go in one transaction.
MAX_BATCH = 1000
# Runs of a batch whose transaction lost a race (deadlock) before its callers are told to retry.
_ATTEMPTS = 3


R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BatchOutcome(Generic[R]):
    """One call of a batch (a transfer, a Reserve, a Confirm): its result, or the error that
    refused it (and only it)."""

    result: R | None = None
    error: HirepayError | None = None


_Prepared = tuple[TransferHeader, tuple[Leg, ...]] | HirepayError


def check_batch_size(items: Sized, field: str) -> None:
    """A batch call has 1 to MAX_BATCH items; VALIDATION_FAILED names the repeated field."""
    if not items:
        raise invalid(field, "at least one item is required")
    if len(items) > MAX_BATCH:
        raise invalid(field, f"at most {MAX_BATCH} items")


async def create_transfers(
    cmd: commands.CreateTransfers, deps: Deps
) -> list[BatchOutcome[TransferResult]]:
    """Post every transfer of the batch in order in one transaction; outcomes in the same order,
    known only after COMMIT. Each transfer is idempotent on its id, also within the batch (a repeat
    of an id posted earlier in the batch is answered as a replay)."""
    check_batch_size(cmd.transfers, "transfers")
    prepared: list[_Prepared] = []
    for item in cmd.transfers:
        try:
            prepared.append(transfer_header(item))
        except HirepayError as exc:
            prepared.append(exc)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await _post_batch(prepared, deps)
        except Conflict:
            if attempt == _ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _post_batch(prepared: list[_Prepared], deps: Deps) -> list[BatchOutcome[TransferResult]]:
    # Every sharded account gets one shard for the whole batch, so a batch changes one shard row per
    # such account, once (concurrent batches then rarely lock shards in opposite orders).
    shard_key = uuid.uuid4().hex
    outcomes: list[BatchOutcome[TransferResult] | None] = [None] * len(prepared)
    async with deps.uow() as uow:
        # Every account the batch's legs name, in one comprehension (`legs_accounts` per
        # transfer was two Python calls each; issue 13).
        wanted = {
            account
            for item in prepared
            if not isinstance(item, HirepayError)
            for leg in item[1]
            for account in (leg.from_account_id, leg.to_account_id)
        }
        refs = await uow.accounts.refs(wanted)
        now = deps.clock()
        planned: list[tuple[int, TransferHeader, Posting]] = []
        for i, item in enumerate(prepared):
            if isinstance(item, HirepayError):
                outcomes[i] = BatchOutcome(error=item)
                continue
            header, legs = item
            try:
                planned.append(
                    (i, header, plan_posting(shard_key, entries_for_legs(legs, refs), refs))
                )
            except HirepayError as exc:
                outcomes[i] = BatchOutcome(error=exc)
        if not await _post_alone(uow, planned, outcomes, now):
            # Every account row of the batch locked first, in one statement, in id order, then
            # every id claimed (id order), then every shard locked ((account, shard) order): the
            # checked runs below lock their rows, claim their ids and change their shards
            # statement by statement (a repeated id or a guarded debit splits the batch into
            # several), and a later run's rows, ids or shards may sort before an earlier one's;
            # taken in two orders by one transaction, they deadlocked with a concurrent batch (or
            # group of holds, or a twin of a transfer) that holds the one and waits for the other
            # (issue 13). Held, each later lock is this transaction's own; the ids claimed here
            # are posted by their first item without a claim of their own.
            ahead = (
                await uow.ledger.claim_ahead([(h, p) for _, h, p in planned]) if planned else set()
            )
            await _post_checked_runs(uow, planned, outcomes, now, ahead)
            await uow.commit()
    return [o if o is not None else BatchOutcome(error=_lost()) for o in outcomes]


async def _post_alone(
    uow: WalletUnitOfWork,
    planned: list[tuple[int, TransferHeader, Posting]],
    outcomes: list[BatchOutcome[TransferResult] | None],
    now: datetime,
) -> bool:
    """The common case in one round trip: a batch of distinct ids, none a guarded debit of a
    sharded account, none of whose postings can be refused, is one statement that commits itself
    (post_run_alone); taken ids are then replayed from the committed rows. False when the batch
    needs the checked path (nothing was written)."""
    # (A list: one Python call, where a generator was one per transfer.)
    if not planned or any([p.guarded_sharded for _, _, p in planned]):
        return False
    if len({header.id for _, header, _ in planned}) != len(planned):
        return False
    posted = await uow.ledger.post_run_alone([(header, posting) for _, header, posting in planned])
    if posted is None:
        return False
    await _answer(uow, planned, posted, outcomes, now)
    return True


async def _post_checked_runs(
    uow: WalletUnitOfWork,
    planned: list[tuple[int, TransferHeader, Posting]],
    outcomes: list[BatchOutcome[TransferResult] | None],
    now: datetime,
    ahead: set[str],
) -> None:
    """Each posting judged in order in the unit of work's transaction: consecutive ordinary
    postings are written together, set-based; a guarded debit of a sharded account takes the
    checked slow path on its own, in its turn. `ahead`: the ids this transaction claimed up front
    that no item has posted yet (the first item of each id takes it out)."""
    run: list[tuple[int, TransferHeader, Posting]] = []
    run_ids: set[str] = set()
    for i, header, posting in planned:
        if header.id in run_ids:
            # A repeated id waits for the outcome of its first occurrence (posted: replayed).
            await _post_run(uow, run, outcomes, now, ahead)
            run, run_ids = [], set()
        if not posting.guarded_sharded:
            run.append((i, header, posting))
            run_ids.add(header.id)
            continue
        await _post_run(uow, run, outcomes, now, ahead)
        run, run_ids = [], set()
        claimed = _take(ahead, header.id)
        outcomes[i] = await _outcome(_post_checked(uow, header, posting, now, claimed=claimed))
    await _post_run(uow, run, outcomes, now, ahead)


def _take(ahead: set[str], transfer_id: str) -> bool:
    """Whether the id was claimed up front and not yet posted (and from now on it is)."""
    if transfer_id in ahead:
        ahead.remove(transfer_id)
        return True
    return False


def _lost() -> HirepayError:
    return HirepayError("a transfer of the batch has no outcome", reason="INTERNAL")


async def _outcome(call: Awaitable[R]) -> BatchOutcome[R]:
    try:
        return BatchOutcome(result=await call)
    except HirepayError as exc:
        return BatchOutcome(error=exc)


async def _post_run(
    uow: WalletUnitOfWork,
    run: list[tuple[int, TransferHeader, Posting]],
    outcomes: list[BatchOutcome[TransferResult] | None],
    now: datetime,
    ahead: set[str],
) -> None:
    """Post ordinary postings set-based; replay those whose id was taken. A lone posting takes the
    one-statement path (one round trip instead of two). Ids in `ahead` are posted as claimed."""
    if not run:
        return
    if len(run) == 1:
        i, header, posting = run[0]
        claimed = _take(ahead, header.id)
        outcomes[i] = await _outcome(_post_checked(uow, header, posting, now, claimed=claimed))
        return
    mine = {header.id for _, header, _ in run if _take(ahead, header.id)}
    posted = await uow.ledger.post_many([(header, posting) for _, header, posting in run], mine)
    await _answer(uow, run, posted, outcomes, now)


async def _answer(
    uow: WalletUnitOfWork,
    run: list[tuple[int, TransferHeader, Posting]],
    posted: list[PostOutcome],
    outcomes: list[BatchOutcome[TransferResult] | None],
    now: datetime,
) -> None:
    """Each posting's outcome: posted, refused, or - its id taken - the stored transfer replayed."""
    for (i, header, _), outcome in zip(run, posted, strict=True):
        if not outcome.claimed:
            outcomes[i] = await _outcome(replay_transfer(uow, header))
        elif outcome.rejected:
            outcomes[i] = BatchOutcome(error=InsufficientFunds(outcome.rejected[0]))
        else:
            record = transfer_record(header, outcome.created_at or now, outcome.entries)
            outcomes[i] = BatchOutcome(result=TransferResult(record))


async def _post_checked(
    uow: WalletUnitOfWork,
    header: TransferHeader,
    posting: Posting,
    now: datetime,
    *,
    claimed: bool = False,
) -> TransferResult:
    """One posting on its own (the checked slow path when it debits a sharded account), or its
    replay; a refusal leaves nothing behind. `claimed`: its id was claimed up front."""
    try:
        outcome = await apply_posting(uow, header.id, posting, claim=None if claimed else header)
    except InsufficientFunds:
        # Raised only after the id was claimed; the refused posting changed no balance.
        await uow.ledger.release_claim(header.id)
        raise
    if outcome is None:
        return await replay_transfer(uow, header)
    return TransferResult(transfer_record(header, outcome.created_at or now, outcome.entries))
