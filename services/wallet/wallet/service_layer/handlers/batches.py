"""Use case of a batch of transfers: many independent transfers in one local transaction, each with
its own outcome (the CreateTransfers RPC, and concurrent Transfer calls grouped by the batcher).

One transaction per batch means one BEGIN, one COMMIT and one WAL flush for all of them instead of
one each. A transfer refused by a business rule fails alone: a refused posting changes no balance
(the posting statement judges every row before changing any), so all there is to undo is its claimed
transfer id. A lost race (deadlock) aborts the whole transaction: nothing was committed, so the
batch is run again; transfer ids keep every retry idempotent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from hirepay_platform.errors import Conflict, HirepayError
from wallet.domain import commands
from wallet.domain.errors import InsufficientFunds, invalid
from wallet.domain.ledger import EntryLine, Leg, entries_for_legs, plan_posting
from wallet.domain.model import AccountRef
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.common import apply_posting, transfer_record
from wallet.service_layer.handlers.transfers import (
    TransferResult,
    legs_accounts,
    replay_transfer,
    transfer_header,
)
from wallet.service_layer.ports import TransferHeader, WalletUnitOfWork

# Transfers per CreateTransfers call (each is one statement in the batch's transaction).
MAX_BATCH = 1000
# Runs of a batch whose transaction lost a race (deadlock) before its callers are told to retry.
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One transfer of a batch: its result, or the error that refused it (and only it)."""

    result: TransferResult | None = None
    error: HirepayError | None = None


_Prepared = tuple[TransferHeader, tuple[Leg, ...]] | HirepayError


async def create_transfers(cmd: commands.CreateTransfers, deps: Deps) -> list[BatchOutcome]:
    """Post every transfer of the batch in order in one transaction; outcomes in the same order,
    known only after COMMIT. Each transfer is idempotent on its id, also within the batch (a repeat
    of an id posted earlier in the batch is answered as a replay)."""
    if not cmd.transfers:
        raise invalid("transfers", "at least one transfer is required")
    if len(cmd.transfers) > MAX_BATCH:
        raise invalid("transfers", f"at most {MAX_BATCH} transfers")
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


async def _post_batch(prepared: list[_Prepared], deps: Deps) -> list[BatchOutcome]:
    # Every sharded account gets one shard for the whole batch, so a batch locks one shard row per
    # such account (concurrent batches then rarely lock shards in opposite orders).
    shard_key = uuid.uuid4().hex
    outcomes: list[BatchOutcome] = []
    async with deps.uow() as uow:
        wanted: set[str] = set()
        for item in prepared:
            if not isinstance(item, HirepayError):
                wanted |= legs_accounts(item[1])
        refs = await uow.accounts.refs(wanted)
        now = deps.clock()
        for item in prepared:
            if isinstance(item, HirepayError):
                outcomes.append(BatchOutcome(error=item))
                continue
            header, legs = item
            try:
                lines = entries_for_legs(legs, refs)
                result = await _post_one(uow, header, lines, refs, now, shard_key)
            except HirepayError as exc:
                outcomes.append(BatchOutcome(error=exc))
            else:
                outcomes.append(BatchOutcome(result=result))
        await uow.commit()
    return outcomes


async def _post_one(
    uow: WalletUnitOfWork,
    header: TransferHeader,
    lines: list[EntryLine],
    refs: dict[str, AccountRef],
    now: datetime,
    shard_key: str,
) -> TransferResult:
    """Claim and post one transfer of the batch, or replay it; a refusal leaves nothing behind."""
    posting = plan_posting(shard_key, lines, refs)
    try:
        outcome = await apply_posting(uow, header.id, posting, claim=header)
    except InsufficientFunds:
        # Raised only after the id was claimed; the refused posting changed no balance.
        await uow.ledger.release_claim(header.id)
        raise
    if outcome is None:
        return await replay_transfer(uow, header)
    return TransferResult(transfer_record(header, outcome.created_at or now, outcome.entries))
