"""Use cases of grouped holds: concurrent ReserveHold calls run together in one local transaction,
and so do concurrent ConfirmHold calls (the batcher gathers them), and so do the items of the batch
calls CreateHolds (Trys) and ResolveHolds (Confirms and Cancels). Each call (or item) keeps its own
barrier row and gets its own result or error, the one its call alone would have had.

In the common case a group is ONE statement that commits itself (`_reserve_alone`,
`_confirm_alone`: distinct branches, no sharded account to reserve on or debit, holds that fit, and
for Confirms holds this process reserved and still pending); it writes nothing when it cannot
apply whole, and the group runs checked, as follows.

Checked, a group costs a fixed number of round trips whatever its size: a Reserve group inserts every
barrier row in one statement, locks and reads every account row once (in id order), judges each
Reserve in order on the balances read under those locks (no overdraft, also within the group),
then inserts every accepted hold and its reservation in one statement; a Confirm
group locks every hold (in key order), inserts every barrier row, posts every transfer set-based
(`post_run`, one statement; `post_many` if it could refuse one) and saves every hold in one
statement. A call refused by a business rule fails alone
and leaves nothing behind: it changed no balance, and its barrier row (and claimed transfer id) is
given back in the same transaction, as the rollback of the call on its own would have. Calls of
the same branch in one group run in rounds, so a repeat sees its first occurrence's outcome (in
this transaction) exactly as a later call would. Nobody is answered before the COMMIT; a lost race
(deadlock) aborts the whole transaction, which is then run again (nothing had been committed).

A group of Cancels (ResolveHolds; single CancelHold calls are not grouped) runs checked, in the
same transaction as its round's Confirms: the Trys' barrier rows a Cancel writes before any Try
(null compensations: those of every round's Cancels, the batch's first statement), then the hold
locks (the round's Confirms' with them) and its own barrier rows, then (after the Confirms' gates
and postings) every release as one posting and the holds saved. A Cancel refused (its hold was
confirmed) gives its row back.

A later round never locks a hold its group's earlier rounds did not: a Confirm repeated after
one that found no hold looks for it without a lock, and if its Try committed in between, the
group's transaction is given up and run again at once (`_unseen_holds`), its first round then
locking that hold with the others.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TypeVar

from hirepay_platform.errors import Conflict, HirepayError
from hirepay_platform.tcc import (
    ConfirmGate,
    TccBranch,
    TccOp,
    TryGate,
    enter_confirm_many,
    enter_try_many,
)
from wallet.domain import commands
from wallet.domain.errors import HoldCancelled, HoldNotFound, InsufficientFunds, invalid
from wallet.domain.holds import Hold, HoldState, confirm_transfer_id
from wallet.domain.ledger import BalanceChange, Posting, change_allowed, plan_posting
from wallet.domain.model import AccountRef, Balance, shard_for
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.batches import BatchOutcome, check_batch_size
from wallet.service_layer.handlers.common import apply_posting, transfer_record
from wallet.service_layer.handlers.holds import (
    ConfirmRequest,
    HoldResult,
    ReserveRequest,
    cancel_locked,
    check_reserve_accounts,
    confirm_accounts,
    confirm_request,
    missing_hold,
    new_hold,
    plan_confirm,
    replay_confirm,
    reserve_request,
)
from wallet.service_layer.ports import PostOutcome, TransferHeader, WalletUnitOfWork

# Runs of a group whose transaction lost a race (deadlock) before its callers are told to retry.
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A Cancel's validated branch (its reason is not kept: a repeat is a replay whatever it says)."""

    branch: TccBranch


class _Rerun(Exception):
    """A later round found a hold its group's earlier rounds had not (its Try committed between
    them): the group cannot lock it in its one order, so its transaction is given up (rolled back,
    nothing committed) and run again at once (`_unseen_holds`)."""


Resolution = ConfirmRequest | CancelRequest
Q = TypeVar("Q", ReserveRequest, ConfirmRequest, Resolution)
Outcomes = list[BatchOutcome[HoldResult] | None]


async def reserve_holds(
    cmds: Sequence[commands.ReserveHold], deps: Deps
) -> list[BatchOutcome[HoldResult]]:
    """Run Try calls together in one transaction; outcomes in the same order, after COMMIT."""
    return await _run_group(cmds, reserve_request, _reserve_rounds, deps, alone=_reserve_alone)


async def confirm_holds(
    cmds: Sequence[commands.ConfirmHold], deps: Deps
) -> list[BatchOutcome[HoldResult]]:
    """Run Confirm calls together in one transaction; outcomes in the same order, after COMMIT.
    Every fee of the group into a sharded account goes to one shard (`_group_shard`)."""
    key = _group_shard()
    return await _run_group(
        cmds,
        confirm_request,
        partial(_resolve_rounds, shard_key=key),
        deps,
        alone=partial(_confirm_alone, shard_key=key),
    )


async def create_holds(cmd: commands.CreateHolds, deps: Deps) -> list[BatchOutcome[HoldResult]]:
    """CreateHolds: every Try of the batch in one transaction, as a group of ReserveHold calls;
    outcomes in the same order, after COMMIT."""
    check_batch_size(cmd.holds, "holds")
    return await reserve_holds(cmd.holds, deps)


async def resolve_holds(cmd: commands.ResolveHolds, deps: Deps) -> list[BatchOutcome[HoldResult]]:
    """ResolveHolds: every Confirm and Cancel of the batch in one transaction (items of one branch
    in rounds, in order); outcomes in the same order, after COMMIT. Every fee of the batch into a
    sharded account goes to one shard (`_group_shard`)."""
    check_batch_size(cmd.resolutions, "resolutions")
    key = _group_shard()
    return await _run_group(
        cmd.resolutions,
        _resolution,
        partial(_resolve_rounds, shard_key=key),
        deps,
        alone=partial(_resolve_alone, shard_key=key),
    )


def _group_shard() -> str:
    """The key that picks the one shard a group of Confirms (ConfirmHold calls, or a ResolveHolds
    batch) credits on each sharded account (the fees into the revenue account), as a group of
    transfers picks one (batches._post_batch): one shard row locked and changed per group and
    account, in its one statement or in its checked rounds (which lock it ahead, `_rows_ahead`,
    with the same key), instead of one per Confirm's transfer id (up to 16 rows of the revenue
    account for a batch of 32; issue 13). Each shard is locked after the account rows, in
    (account, shard) order, as before."""
    return uuid.uuid4().hex


def _resolution(cmd: commands.ConfirmHold | commands.CancelHold | None) -> Resolution:
    """Validate one item of ResolveHolds as its single call would."""
    if isinstance(cmd, commands.ConfirmHold):
        return confirm_request(cmd)
    if isinstance(cmd, commands.CancelHold):
        return CancelRequest(cmd.branch.validated())
    raise invalid("action", "one of confirm or cancel is required")


Rounds = Callable[
    [WalletUnitOfWork, list[list[tuple[int, Q]]], datetime, Outcomes], Awaitable[None]
]
Alone = Callable[[WalletUnitOfWork, list[tuple[int, Q]], datetime, Outcomes], Awaitable[bool]]


async def _run_group(
    cmds: Sequence[object],
    validate: Callable[..., Q],
    run_rounds: Rounds[Q],
    deps: Deps,
    *,
    alone: Alone[Q] | None = None,
) -> list[BatchOutcome[HoldResult]]:
    requests: list[Q | HirepayError] = []
    for cmd in cmds:
        try:
            requests.append(validate(cmd))
        except HirepayError as exc:
            requests.append(exc)
    attempt = reruns = 0
    while True:
        outcomes: Outcomes = [
            BatchOutcome(error=r) if isinstance(r, HirepayError) else None for r in requests
        ]
        valid = [(i, r) for i, r in enumerate(requests) if not isinstance(r, HirepayError)]
        try:
            async with deps.uow() as uow:
                now = deps.clock()
                # The common case may be one statement that commits itself; if it cannot be, it
                # wrote nothing and answered nobody, and the group runs checked in a transaction.
                if alone is None or not await alone(uow, valid, now, outcomes):
                    await run_rounds(uow, _rounds(valid), now, outcomes)
                    await uow.commit()
        except _Rerun:
            # Rolled back, nothing committed; not a lost race. Each rerun is owed to a hold that
            # appeared (holds are never deleted: the next run finds it in its first round), so
            # there are at most as many as the group has branches.
            reruns += 1
            if reruns > len(requests):
                raise AssertionError("a group of holds kept running again") from None
            continue
        except Conflict:
            attempt += 1
            if attempt == _ATTEMPTS:
                raise
            continue
        return [o if o is not None else BatchOutcome(error=_lost()) for o in outcomes]


def _rounds(items: list[tuple[int, Q]]) -> list[list[tuple[int, Q]]]:
    """The n-th call of each branch goes in round n: branches are distinct within a round."""
    rounds: list[list[tuple[int, Q]]] = []
    seen: dict[TccBranch, int] = {}
    for i, request in items:
        n = seen.get(request.branch, 0)
        seen[request.branch] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append((i, request))
    return rounds


def _lost() -> HirepayError:
    return HirepayError("a call of the group has no outcome", reason="INTERNAL")


async def _reserve_alone(
    uow: WalletUnitOfWork,
    items: list[tuple[int, ReserveRequest]],
    now: datetime,
    outcomes: Outcomes,
) -> bool:
    """A group of Trys of distinct branches, none on a sharded account, in ONE round trip: one
    statement that is its own transaction (no BEGIN, no COMMIT) inserts every barrier row, locks
    the accounts, adds the holds and their reservations. The calls whose branch had a barrier row
    already are then answered from it (replay, HOLD_CANCELLED, mismatch), as in a round. False,
    with nothing written and nobody answered, when the group needs the checked rounds: a branch
    twice, a sharded account (its balance is in shards, not under the accounts' check), or holds
    that do not all fit (each is then judged in order, the refused ones alone)."""
    if len({r.branch for _, r in items}) != len(items):
        return False
    refs = await uow.accounts.refs({a for _, r in items for a in (r.account_id, r.destination_id)})
    live: list[tuple[int, ReserveRequest]] = []
    refused: list[tuple[int, HirepayError]] = []
    for i, req in items:
        try:
            check_reserve_accounts(req, refs)
        except HirepayError as exc:
            refused.append((i, exc))
            continue
        if refs[req.account_id].shards:  # (`sharded`, less a property call per Reserve)
            return False
        live.append((i, req))
    if live:
        holds = {req.branch: new_hold(req, now) for _, req in live}
        calls = [(r.branch, r.fingerprint) for _, r in live]
        entered = await uow.holds.reserve_alone(calls, list(holds.values()))
        if entered is None:
            return False
        for i, req in await _pass_try_barrier(uow, live, entered, outcomes):
            outcomes[i] = BatchOutcome(result=HoldResult(holds[req.branch]))
    for i, exc in refused:
        outcomes[i] = BatchOutcome(error=exc)
    return True


async def _reserve_rounds(
    uow: WalletUnitOfWork,
    rounds: list[list[tuple[int, ReserveRequest]]],
    now: datetime,
    outcomes: Outcomes,
) -> None:
    """A group's rounds of Trys, the first that locks account rows locking those of the later
    rounds too. A repeated Reserve (a twin of its branch, in a later round) may name another
    account: locked by its own round, that row was taken after the earlier rounds' rows, though it
    may sort before them, and against a concurrent group (or batch of transfers) that locks both in
    id order, holding the one and waiting for the other, the two deadlocked and PostgreSQL aborted
    one (issue 13; its callers told CONFLICT when every run lost). Locked with the first round's,
    after its barrier rows (a branch's first call is in the first round), every account row is
    taken in id order, in the statement that takes the first round's anyway, no round trip more;
    the later rounds' locks are then this transaction's own. A group of one round (no repeated
    branch: the common case, and the one-statement path before it) locks as before.

    A repeat whose earlier calls were all refused by the account check (no barrier row, nothing
    done: as if never sent) inserted its branch's barrier row in its later round, while the group
    held account rows, and a twin elsewhere (the same branch, another group or replica) that had
    inserted that row first and waited for one of those accounts deadlocked with it (issue 13).
    So a group of several rounds answers the calls the account check refuses first (their outcome
    depends on the accounts' fixed attributes only, not on the round) and makes its rounds of the
    others: such a repeat is then its branch's first call, in the first round, its barrier row
    before any account."""
    if len(rounds) > 1:
        rounds = await _checked_rounds(uow, rounds, outcomes)
    ahead = {r.account_id for items in rounds[1:] for _, r in items}
    for items in rounds:
        if await _reserve_round(uow, items, now, outcomes, ahead):
            ahead = set()


async def _checked_rounds(
    uow: WalletUnitOfWork, rounds: list[list[tuple[int, ReserveRequest]]], outcomes: Outcomes
) -> list[list[tuple[int, ReserveRequest]]]:
    """The rounds of the calls the account check admits; the others answered."""
    items = sorted((item for round_ in rounds for item in round_), key=lambda item: item[0])
    admitted, _ = await _admitted(uow, items, outcomes)
    return _rounds(admitted)


async def _admitted(
    uow: WalletUnitOfWork, items: list[tuple[int, ReserveRequest]], outcomes: Outcomes
) -> tuple[list[tuple[int, ReserveRequest]], dict[str, AccountRef]]:
    """The calls of `items` whose accounts pass the Try's check (the others answered with it),
    and the accounts' references read for it."""
    refs = await uow.accounts.refs({a for _, r in items for a in (r.account_id, r.destination_id)})
    admitted: list[tuple[int, ReserveRequest]] = []
    for i, req in items:
        try:
            check_reserve_accounts(req, refs)
        except HirepayError as exc:
            outcomes[i] = BatchOutcome(error=exc)
            continue
        admitted.append((i, req))
    return admitted, refs


async def _reserve_round(
    uow: WalletUnitOfWork,
    items: list[tuple[int, ReserveRequest]],
    now: datetime,
    outcomes: Outcomes,
    ahead: set[str],
) -> bool:
    """One round of Trys of distinct branches; whether it locked account rows (its own, and
    `ahead`: those of the group's later rounds)."""
    live, refs = await _admitted(uow, items, outcomes)
    if not live:
        return False
    calls = [(r.branch, r.fingerprint) for _, r in live]
    accounts = {r.account_id for _, r in live}
    entered, balances, sharded = await uow.holds.try_and_lock(calls, accounts | ahead)
    first = await _pass_try_barrier(uow, live, entered, outcomes)
    if not first:
        return True
    sharded = [a for a in sharded if a in accounts]  # (a later round's: read in its round)
    if sharded:  # a sharded account's balance includes its shards, read after the lock
        balances.update(await uow.ledger.lock_balances(sharded))
    accepted, refused = _reserve_first(first, refs, balances, now, outcomes)
    # A refused Try never happened: a later Try of its branch must find no row.
    await uow.barriers.release(refused, TccOp.TRY)
    await uow.holds.add_reserved(accepted)
    return True


async def _pass_try_barrier(
    uow: WalletUnitOfWork,
    items: list[tuple[int, ReserveRequest]],
    entered: set[TccBranch],
    outcomes: Outcomes,
) -> list[tuple[int, ReserveRequest]]:
    """Each Try's gate (its barrier row is inserted); the first Trys, the others answered."""
    calls = [(r.branch, r.fingerprint) for _, r in items]
    gates = await enter_try_many(uow.barriers, calls, entered)
    first: list[tuple[int, ReserveRequest]] = []
    for (i, req), gate in zip(items, gates, strict=True):
        if isinstance(gate, HirepayError):
            outcomes[i] = BatchOutcome(error=gate)
        elif gate is TryGate.CANCELLED:  # its Cancel came first: a hanging Try reserves nothing
            error = HoldCancelled(req.branch.global_tx_id, req.branch.branch_id)
            outcomes[i] = BatchOutcome(error=error)
        elif gate is TryGate.REPLAY:
            hold = await uow.holds.get(req.branch)
            outcomes[i] = BatchOutcome(result=HoldResult(hold, replayed=True))
        else:
            first.append((i, req))
    return first


def _reserve_first(
    first: list[tuple[int, ReserveRequest]],
    refs: dict[str, AccountRef],
    balances: dict[str, Balance],
    now: datetime,
    outcomes: Outcomes,
) -> tuple[list[Hold], list[TccBranch]]:
    """Judge each first Try in order on the balances read under the account locks (each accepted
    one lowers what the next may take): the new holds, and the refused branches (answered
    INSUFFICIENT_FUNDS)."""
    accepted: list[Hold] = []
    refused: list[TccBranch] = []
    for i, req in first:
        if _reserve_fits(refs[req.account_id], balances, req):
            b = balances[req.account_id]
            balances[req.account_id] = Balance(b.posted, b.pending + req.amount)
            hold = new_hold(req, now)
            accepted.append(hold)
            outcomes[i] = BatchOutcome(result=HoldResult(hold))
        else:
            refused.append(req.branch)
            outcomes[i] = BatchOutcome(error=InsufficientFunds(req.account_id))
    return accepted, refused


def _reserve_fits(ref: AccountRef, balances: dict[str, Balance], req: ReserveRequest) -> bool:
    """The no-overdraft rule on the balance read under the lock, after the earlier Reserves of
    the group (a sharded account's balance includes its shards, so it is judged here too)."""
    balance = balances.get(req.account_id)
    if balance is None:  # the row exists (refs found it) and accounts are never deleted
        return False
    change = BalanceChange(req.account_id, 0, req.amount)
    return change_allowed(balance, change, allow_negative=ref.allow_negative, sharded=False)


_Planned = tuple[int, Hold, TransferHeader, Posting]


async def _confirm_alone(
    uow: WalletUnitOfWork,
    items: list[tuple[int, ConfirmRequest]],
    now: datetime,
    outcomes: Outcomes,
    shard_key: str | None = None,
) -> bool:
    """A group of Confirms of distinct branches whose holds this process reserved, in ONE round
    trip: each planned on its hold as reserved, then one statement that is its own transaction
    (no BEGIN, no COMMIT) checks every hold under its lock and posts them all, or writes nothing.
    False, with nothing written and nobody answered, when the group needs the checked rounds: a
    branch twice, a hold not remembered, not pending or expired (and so any refusal, replay or
    repeat: its hold is resolved), or a debit of a sharded account (its slow path). `shard_key`:
    the group's (`_group_shard`), which picks the shard of every credit to a sharded account."""
    if len({r.branch for _, r in items}) != len(items):
        return False
    recalled = [(i, req, uow.holds.recall(req.branch)) for i, req in items]
    holds = [(i, req, hold) for i, req, hold in recalled if hold is not None]
    if len(holds) != len(items):
        return False
    refs = await uow.accounts.refs({a for _, r, hold in holds for a in confirm_accounts(r, hold)})
    planned: list[tuple[int, Hold, ConfirmRequest, TransferHeader, Posting]] = []
    for i, req, hold in holds:
        try:
            # (Resolves the recalled copy.)
            header, posting = plan_confirm(req, hold, refs, now, shard_key)
        except HirepayError:
            return False  # the checked round gives the same refusal, under the hold's lock
        if posting.guarded_sharded:
            return False
        planned.append((i, hold, req, header, posting))
    posted = await uow.holds.confirm_alone(
        [(hold, req.fingerprint) for _, hold, req, _, _ in planned],
        [(header, posting) for _, _, _, header, posting in planned],
        now,
    )
    if posted is None:
        return False
    for (i, hold, _, header, _), outcome in zip(planned, posted, strict=True):
        record = transfer_record(header, outcome.created_at or now, outcome.entries)
        outcomes[i] = BatchOutcome(result=HoldResult(hold, transfer=record))
    return True


_Entered = tuple[list[tuple[int, ConfirmRequest]], dict[TccBranch, Hold]]


async def _enter_confirms(
    uow: WalletUnitOfWork,
    items: list[tuple[int, ConfirmRequest]],
    outcomes: Outcomes,
    lock: list[TccBranch] | None = None,
) -> _Entered:
    """Each Confirm's gate (its hold's lock, then its barrier row, the order of the one-statement
    path, so that twins on the two paths queue on the hold instead of deadlocking): the first
    Confirms and their locked holds, the others answered (replays, mismatches). `lock`: the
    holds to lock, if not every Confirm's (a later round's: those its group locked)."""
    calls = [(r.branch, r.fingerprint) for _, r in items]
    entered, holds = await uow.holds.confirm_and_lock(calls, lock)
    gates = await enter_confirm_many(uow.barriers, calls, entered)
    first: list[tuple[int, ConfirmRequest]] = []
    for (i, req), gate in zip(items, gates, strict=True):
        if isinstance(gate, HirepayError):
            outcomes[i] = BatchOutcome(error=gate)
        elif gate is ConfirmGate.REPLAY:
            outcomes[i] = BatchOutcome(result=await replay_confirm(uow, req.branch))
        else:
            first.append((i, req))
    return first, holds


async def _finish_confirms(
    uow: WalletUnitOfWork,
    planned: list[_Planned],
    now: datetime,
    outcomes: Outcomes,
    give_back: list[TccBranch],
) -> None:
    """Post the planned Confirms (their holds locked) and save their holds; a refused one is
    answered, and its barrier row given back with those refused in planning."""
    confirmed = await _post_confirms(uow, planned, now, outcomes, give_back)
    await uow.holds.save(confirmed)
    # A refused Confirm never happened: its branch may be confirmed (or cancelled) later.
    await uow.barriers.release(give_back, TccOp.CONFIRM)


async def _plan_confirms(
    uow: WalletUnitOfWork,
    first: list[tuple[int, ConfirmRequest]],
    holds: dict[TccBranch, Hold],
    now: datetime,
    outcomes: Outcomes,
    give_back: list[TccBranch],
    untried: Collection[TccBranch] = (),
    shard_key: str | None = None,
) -> list[_Planned]:
    """Plan each Confirm's transfer on its hold (locked with the barrier insert, so a racing
    Cancel or expiry resolves it before or after us, never both); a refused one is answered and
    given back. `untried`: branches whose Try row the group wrote for a Cancel of a later round
    (no Try happened): HOLD_NOT_FOUND, as before that Cancel, not HOLD_CANCELLED."""
    if not first:
        return []
    wanted = {
        a for _, r in first if r.branch in holds for a in confirm_accounts(r, holds[r.branch])
    }
    refs = await uow.accounts.refs(wanted)
    planned: list[_Planned] = []
    for i, req in first:
        try:
            hold = holds.get(req.branch)
            if hold is None and req.branch in untried:
                raise HoldNotFound(req.branch.global_tx_id, req.branch.branch_id)
            if hold is None:
                raise await missing_hold(uow, req.branch)
            header, posting = plan_confirm(req, hold, refs, now, shard_key)
        except HirepayError as exc:
            outcomes[i] = BatchOutcome(error=exc)
            give_back.append(req.branch)
            continue
        planned.append((i, hold, header, posting))
    return planned


async def _post_confirms(
    uow: WalletUnitOfWork,
    planned: list[_Planned],
    now: datetime,
    outcomes: Outcomes,
    give_back: list[TccBranch],
) -> list[Hold]:
    """Post every planned transfer (set-based; a hold on a guarded sharded account on its slow
    path); the holds confirmed."""
    ordinary = [p for p in planned if not p[3].guarded_sharded]
    results: list[tuple[_Planned, PostOutcome]] = []
    if len(ordinary) > 1:
        run = [(header, post) for _, _, header, post in ordinary]
        # A Confirm never lowers its account's availability (the hold's pending leaves with the
        # amount posted), so one statement nearly always takes the lot; else checked, in order.
        posted = await uow.ledger.post_run(run) or await uow.ledger.post_many(run)
        results += zip(ordinary, posted, strict=True)
    # A lone posting takes the one-statement path (one round trip instead of two), and so does a
    # hold on a guarded sharded account (its checked slow path).
    for p in planned:
        if p[3].guarded_sharded or len(ordinary) == 1:
            results.append((p, await _post_one(uow, p[2], p[3])))
    confirmed: list[Hold] = []
    for (i, hold, header, _), outcome in results:
        if not outcome.claimed:  # only a Confirm writes this id, and the barrier admits one
            error = HirepayError(f"transfer {header.id} already exists", reason="TCC_INCONSISTENT")
            outcomes[i] = BatchOutcome(error=error)
            give_back.append(hold.branch)
        elif outcome.rejected:  # never expected: a Confirm only spends what its hold reserved
            outcomes[i] = BatchOutcome(error=InsufficientFunds(outcome.rejected[0]))
            give_back.append(hold.branch)
        else:
            record = transfer_record(header, outcome.created_at or now, outcome.entries)
            outcomes[i] = BatchOutcome(result=HoldResult(hold, transfer=record))
            confirmed.append(hold)
    return confirmed


async def _post_one(uow: WalletUnitOfWork, header: TransferHeader, posting: Posting) -> PostOutcome:
    """One posting on its own (the checked slow path when it debits a guarded sharded account);
    a refusal gives back its claimed id."""
    try:
        outcome = await apply_posting(uow, header.id, posting, claim=header)
    except InsufficientFunds as exc:
        await uow.ledger.release_claim(header.id)
        return PostOutcome(rejected=(str(exc.metadata.get("account_id", "?")),))
    return outcome if outcome is not None else PostOutcome(claimed=False)


async def _resolve_alone(
    uow: WalletUnitOfWork,
    items: list[tuple[int, Resolution]],
    now: datetime,
    outcomes: Outcomes,
    shard_key: str | None = None,
) -> bool:
    """Confirms only: the one statement of a Confirm group (`_confirm_alone`). A batch with a
    Cancel runs checked."""
    if not items:
        return True
    confirms = [(i, r) for i, r in items if isinstance(r, ConfirmRequest)]
    if len(confirms) != len(items):
        return False
    return await _confirm_alone(uow, confirms, now, outcomes, shard_key)


async def _resolve_rounds(
    uow: WalletUnitOfWork,
    rounds: list[list[tuple[int, Resolution]]],
    now: datetime,
    outcomes: Outcomes,
    shard_key: str | None = None,
) -> None:
    """A group's rounds of Confirms and Cancels (a group of ConfirmHold calls is one of Confirms
    only), one after the other. A round's postings may lock account rows in several statements
    (its Confirms', then its Cancels' releases), and so may a later round (a Confirm repeated after its refusal, a Cancel after
    a refused Confirm). Locked statement by statement, a row was taken after others that sort
    after it, and against a concurrent group (or batch of transfers) that locks both in id order,
    holding the one and waiting for the other, the two deadlocked and PostgreSQL aborted one
    (issue 13; its callers told CONFLICT when every run lost). So when a statement after the first
    would lock a row none before it holds, the round first locks every account row of its
    postings and of the later rounds' (on the holds already locked), in id order, in one
    statement. A round that posts in one statement, or whose later statements lock only rows
    already held, and no later round that posts elsewhere (the common case) locks as before."""
    known: dict[TccBranch, Hold] = {}  # every hold the group has locked so far
    untried = await _write_untried(uow, rounds)
    locked = False
    missing: set[TccBranch] = set()  # branches whose Confirm found no hold
    for n, items in enumerate(rounds):
        if n:
            await _unseen_holds(uow, items, missing)
        locked = await _resolve_round(
            uow,
            items,
            now,
            outcomes,
            known,
            rounds[n + 1 :],
            locked,
            untried,
            missing,
            n == 0,
            shard_key,
        )


async def _unseen_holds(
    uow: WalletUnitOfWork, items: list[tuple[int, Resolution]], missing: set[TccBranch]
) -> None:
    """Before a later round: a Confirm whose branch an earlier Confirm found without a hold looks
    for it without a lock (every other call of a later round is of a hold the group's first call
    of its branch locked, or found absent under the Try row the group wrote up front for a
    Cancel of it). A Try that committed since (a coordinator that confirmed before its Try was
    answered, twice in one group) made one, which the round locked, with its accounts, after rows
    of the earlier rounds that may sort after them, and waited for them: against a group locking
    its payer and one of those rows in id order (a transfer), or a twin Confirm elsewhere holding
    the hold and waiting for the Confirm barrier row this group had inserted (and given back) in
    the earlier round, a deadlock (issue 13). Found, the group runs again (`_Rerun`): its first
    round then locks that hold with the others, in key order, before any account. Not found, the
    round's Confirm does not lock it (a Try committing after this read comes after the Confirm)
    and is answered as its earlier call was (HOLD_NOT_FOUND). One read per such Confirm: a later
    round of twins or repeats of Confirms that found their holds reads nothing."""
    for _, req in items:
        if (
            isinstance(req, ConfirmRequest)
            and req.branch in missing
            and await uow.holds.get(req.branch) is not None
        ):
            raise _Rerun


async def _write_untried(
    uow: WalletUnitOfWork, rounds: list[list[tuple[int, Resolution]]]
) -> set[TccBranch]:
    """The Try barrier rows of every Cancel of the group (`enter_cancel`'s first step), written
    before anything else; the branches whose row this wrote: no Try happened, and none will (a
    late Try finds the row and refuses), so the branch's first Cancel is a null compensation.

    Written in its own round, a later round's Cancel (after a Confirm of its branch, refused: no
    hold yet) inserted the row while the group held the account rows of its earlier rounds, and
    the branch's Try in flight elsewhere (a group of Reserves that had inserted it and waited for
    one of those accounts) and the group each waited for the other: a deadlock (issue 13). Here
    the group holds nothing yet: it waits for such a Try to end, and then finds its hold. A Confirm
    before its branch's first Cancel finds no hold either way; it is answered HOLD_NOT_FOUND as
    before, though the row is there (`_plan_confirms`)."""
    branches = {r.branch for items in rounds for _, r in items if isinstance(r, CancelRequest)}
    if not branches:
        return set()
    ordered = sorted(branches, key=lambda b: (b.global_tx_id, b.branch_id))  # (every group's)
    return await uow.barriers.insert_many(ordered, TccOp.TRY, TccOp.CANCEL, [{}] * len(ordered))


async def _resolve_round(
    uow: WalletUnitOfWork,
    items: list[tuple[int, Resolution]],
    now: datetime,
    outcomes: Outcomes,
    known: dict[TccBranch, Hold],
    later: list[list[tuple[int, Resolution]]],
    locked: bool,
    untried: set[TccBranch],
    missing: set[TccBranch],
    first_round: bool,
    shard_key: str | None = None,
) -> bool:
    """A round of distinct branches: every gate first - the Cancels' (the Trys' barrier rows
    written up front, then the hold locks, the Confirms' with them, and their own rows), then the
    Confirms' (their holds, locked already if the round cancels too, and barrier rows) - and
    only then the postings, which lock account rows. So the round takes its locks in the order a
    single Try (barrier row, then accounts), Confirm or Cancel (hold, barrier row, accounts)
    takes them, and does not hold an account's lock while it waits for a branch's barrier row
    (a deadlock, and the round run again). Neither a Confirm nor a Cancel lowers what an account
    has available, so their order changes no outcome. Whether the group's account rows are
    locked up front (`_resolve_rounds`), now or before."""
    confirms = [(i, r) for i, r in items if isinstance(r, ConfirmRequest)]
    cancels = [(i, r) for i, r in items if isinstance(r, CancelRequest)]
    # A later round locks no hold its branch's earlier Confirms found missing (`_unseen_holds`:
    # still none there); the others it locked in its first round already.
    lock = None if first_round else [r.branch for _, r in confirms if r.branch not in missing]
    cancelling: list[tuple[int, TccBranch, Hold | None]] = []
    if cancels:
        also = [r.branch for _, r in confirms] if lock is None else lock
        cancelling = await _enter_cancels(uow, cancels, also, untried, outcomes)
    first, holds = await _enter_confirms(uow, confirms, outcomes, lock) if confirms else ([], {})
    missing.update(r.branch for _, r in first if r.branch not in holds)
    known.update(holds)
    known.update((branch, hold) for _, branch, hold in cancelling if hold is not None)
    give_back: list[TccBranch] = []
    planned = await _plan_confirms(uow, first, holds, now, outcomes, give_back, untried, shard_key)
    if not locked:
        steps = _posting_steps(planned)
        releases = {hold.account_id for _, _, hold in cancelling if hold is not None}
        steps.append((releases, set()))
        if later:
            steps.append(await _rows_ahead(uow, later, known, shard_key))
        if _new_rows_later(steps):
            await uow.ledger.lock_balances(set().union(*[a for a, _ in steps]))
            await uow.ledger.lock_shards(set().union(*[s for _, s in steps]))
            locked = True
    if first:
        await _finish_confirms(uow, planned, now, outcomes, give_back)
    await _apply_cancels(uow, cancelling, now, outcomes)
    return locked


_Shard = tuple[str, int]  # (account, shard)
_Step = tuple[set[str], set[_Shard]]  # the account rows, then the shard rows, a statement locks


def _new_rows_later(steps: list[_Step]) -> bool:
    """Whether a statement after the first would lock an account row that none before it holds
    (a row that may sort before theirs), or a shard row when earlier ones hold shard rows (every
    posting locks its shard rows after its account rows, in (account, shard) order: a shard taken
    by a later statement may sort before one an earlier statement holds). Rows all held already
    (the releases of a batch's Cancels on the accounts its Confirms posted on) are no new lock:
    no statement more."""
    held: set[str] = set()
    held_shards: set[_Shard] = set()
    for accounts, shards in steps:
        if (held or held_shards) and not accounts <= held:
            return True
        if held_shards and not shards <= held_shards:
            return True
        held |= accounts
        held_shards |= shards
    return False


def _posting_steps(planned: list[_Planned]) -> list[_Step]:
    """The account and shard rows each statement of `_post_confirms` will lock, in its order (as
    it splits them): the run of ordinary postings (one statement), then each posting on its own
    (a lone ordinary one; one on a guarded sharded account, never expected of a Confirm, which
    lowers no availability)."""
    ordinary = [p for p in planned if not p[3].guarded_sharded]
    run = [p[3] for p in ordinary] if len(ordinary) > 1 else []
    steps = [_rows_of(run)] if run else []
    steps += [_rows_of([p[3]]) for p in planned if p[3].guarded_sharded or len(ordinary) == 1]
    return steps


def _rows_of(postings: list[Posting]) -> _Step:
    return (
        {c.account_id for p in postings for c in p.row_changes},
        {(s.account_id, s.shard) for p in postings for s in p.shard_changes},
    )


async def _rows_ahead(
    uow: WalletUnitOfWork,
    later: list[list[tuple[int, Resolution]]],
    known: dict[TccBranch, Hold],
    shard_key: str | None = None,
) -> _Step:
    """Every account and shard row the later rounds' Confirms and Cancels may lock: of those
    whose hold an earlier round locked (any other posts nothing: its branch's gate, passed or
    refused in this transaction, is a replay or a refusal), the hold's account (its pending
    changes), the accounts a Confirm may credit but a sharded one (credited in its shards: a
    credit never locks its row, the hot revenue account's), and the shard a Confirm may change
    on each sharded account it names (picked by the group's `shard_key`, else by its transfer
    id: a fee into the revenue account). Locked in a later round's statement only, the fee's shard was taken after the
    earlier rounds' shards, which it may sort before: against a group changing both in one
    statement, in order, a deadlock (issue 13)."""
    accounts: set[str] = set()
    named: dict[str, set[str]] = {}  # each later Confirm's transfer id: the accounts it names
    for items in later:
        for _, req in items:
            hold = known.get(req.branch)
            if hold is None:
                continue
            accounts.add(hold.account_id)
            if isinstance(req, ConfirmRequest):
                named[confirm_transfer_id(req.branch)] = confirm_accounts(req, hold)
    if not named:
        return accounts, set()
    refs = await uow.accounts.refs(set().union(*named.values()))
    shards: set[_Shard] = set()
    for transfer_id, names in named.items():
        for a in names:
            ref = refs.get(a)
            if ref is None:
                continue  # (refused in planning: it posts nothing)
            if ref.sharded:
                shards.add((a, shard_for(shard_key or transfer_id, ref.shards)))
            else:
                accounts.add(a)
    return accounts, shards


async def _enter_cancels(
    uow: WalletUnitOfWork,
    items: list[tuple[int, CancelRequest]],
    also_lock: list[TccBranch],
    untried: set[TccBranch],
    outcomes: Outcomes,
) -> list[tuple[int, TccBranch, Hold | None]]:
    """Each Cancel's gate, as `cancel_hold` alone passes the platform's `enter_cancel`, for the
    group: the Trys' barrier rows (`_write_untried`, up front: `untried`, no Try happened, a null
    compensation, and a late Try will refuse), then in one round trip the hold locks (with those
    of `also_lock`, the round's Confirms', in one key order) and the Cancels' own rows (there
    already: a replay). The first Cancels with their locked holds; the others answered."""
    branches = [r.branch for _, r in items]
    entered, holds = await uow.holds.cancel_and_lock(branches, also_lock)
    first: list[tuple[int, TccBranch, Hold | None]] = []
    for i, req in items:
        branch = req.branch
        if branch in untried:
            untried.discard(branch)  # its Cancel happened: a later Confirm finds HOLD_CANCELLED
            outcomes[i] = BatchOutcome(result=HoldResult(None, null_compensation=True))
        elif branch not in entered:
            hold = await uow.holds.get(branch)
            result = HoldResult(hold, replayed=True, null_compensation=hold is None)
            outcomes[i] = BatchOutcome(result=result)
        else:
            first.append((i, branch, holds.get(branch)))
    return first


async def _apply_cancels(
    uow: WalletUnitOfWork,
    first: list[tuple[int, TccBranch, Hold | None]],
    now: datetime,
    outcomes: Outcomes,
) -> None:
    """Cancel each first Cancel's locked hold (an expired one: nothing to release), release them
    all as one posting and save them; a refused Cancel (its hold was confirmed) gives its barrier
    row back."""
    released: list[Hold] = []
    give_back: list[TccBranch] = []
    for i, branch, locked in first:
        try:
            hold = cancel_locked(locked, branch, now)
        except HirepayError as exc:
            # A refused Cancel never happened: its branch may be cancelled later (or not).
            outcomes[i] = BatchOutcome(error=exc)
            give_back.append(branch)
            continue
        if hold.state is HoldState.CANCELLED:
            released.append(hold)
        outcomes[i] = BatchOutcome(result=HoldResult(hold))
    if released:
        refs = await uow.accounts.refs({h.account_id for h in released})
        changes = [h.release() for h in released]
        await apply_posting(uow, None, plan_posting("cancel", [], refs, changes))
        await uow.holds.save(released)
    await uow.barriers.release(give_back, TccOp.CANCEL)
