"""Use cases of holds, the wallet's side of the two-phase handshake: Try (reserve), Confirm (post),
Cancel (release), each behind the platform's TCC barrier in the same local transaction.

The gates (`hirepay_platform.tcc`) answer the three anomalies: a repeated call is a replay (its
fingerprint must match), a Cancel before its Try is a null compensation (recorded, succeeds, does
nothing), and a Try after its Cancel reserves nothing (hanging Try: HOLD_CANCELLED).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hirepay_platform import money
from hirepay_platform.errors import HirepayError
from hirepay_platform.fingerprint import Fingerprint, fingerprint
from hirepay_platform.tcc import (
    CancelGate,
    ConfirmGate,
    TccBranch,
    TryGate,
    cancelled_before_try,
    enter_cancel,
    enter_confirm,
    enter_try,
)
from wallet.domain import commands
from wallet.domain.errors import HoldCancelled, HoldNotFound, invalid
from wallet.domain.holds import Hold, HoldState, confirm_transfer_id, hold_ttl
from wallet.domain.ledger import EntryLine, Posting, TransferRecord, plan_posting
from wallet.domain.model import (
    AccountRef,
    require_accounts,
    validate_account_id,
    validate_description,
)
from wallet.domain.splits import Part, Share, split_amount, validate_shares
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.common import (
    apply_posting,
    check_unit,
    share_fields,
    transfer_record,
    validated_shares,
)
from wallet.service_layer.ports import TransferHeader, WalletUnitOfWork


@dataclass(frozen=True, slots=True)
class HoldResult:
    """A hold after a TCC call; `hold` is None after a null compensation."""

    hold: Hold | None
    replayed: bool = False
    null_compensation: bool = False
    transfer: TransferRecord | None = None


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """A Try's validated fields and fingerprint (checked before any database work)."""

    branch: TccBranch
    account_id: str
    destination_id: str
    amount: int
    unit: str
    ttl: timedelta
    description: str
    fingerprint: Fingerprint


def reserve_request(cmd: commands.ReserveHold) -> ReserveRequest:
    """Validate a Try; VALIDATION_FAILED names the first bad field."""
    branch = cmd.branch.validated()
    account_id = validate_account_id(cmd.account_id)
    destination_id = validate_account_id(cmd.destination_account_id, "destination_account_id")
    if destination_id == account_id:
        raise invalid("destination_account_id", "must differ from account_id")
    money.validate_amount(cmd.amount, field="amount.amount_minor")
    money.validate_unit(cmd.unit, field="amount.currency")
    ttl = hold_ttl(cmd.expires_in_seconds)
    description = validate_description(cmd.description)
    print_ = fingerprint(
        {
            "account_id": account_id,
            "destination_account_id": destination_id,
            "amount": [cmd.amount, cmd.unit],
            "expires_in_seconds": cmd.expires_in_seconds,
            "description": description,
        }
    )
    return ReserveRequest(
        branch, account_id, destination_id, cmd.amount, cmd.unit, ttl, description, print_
    )


def check_reserve_accounts(req: ReserveRequest, refs: dict[str, AccountRef]) -> None:
    """Both accounts exist and are in the hold's unit."""
    require_accounts(
        refs, [(req.account_id, "account_id"), (req.destination_id, "destination_account_id")]
    )
    # check_unit called only to refuse (two calls less per Reserve; issue 13).
    for account_id in (req.account_id, req.destination_id):
        if refs[account_id].unit != req.unit:
            check_unit(refs[account_id], req.unit, "amount.currency")


def new_hold(req: ReserveRequest, now: datetime) -> Hold:
    """The pending hold a first Try makes."""
    return Hold(
        branch=req.branch,
        account_id=req.account_id,
        destination_account_id=req.destination_id,
        unit=req.unit,
        amount=req.amount,
        expires_at=now + req.ttl,
        created_at=now,
        description=req.description,
    )


async def reserve_hold(cmd: commands.ReserveHold, deps: Deps) -> HoldResult:
    """Try: reserve the amount (it stops being available) under the TCC barrier.

    The barrier row (branch, "try") is inserted first. If it already exists, either this is a
    repeat (answered with the hold) or a Cancel got there first (hanging Try): reserve nothing.
    """
    req = reserve_request(cmd)
    async with deps.uow() as uow:
        refs = await uow.accounts.refs([req.account_id, req.destination_id])
        check_reserve_accounts(req, refs)
        gate = await enter_try(uow.barriers, req.branch, req.fingerprint)
        if gate is TryGate.CANCELLED:
            raise HoldCancelled(req.branch.global_tx_id, req.branch.branch_id)
        if gate is TryGate.REPLAY:
            return HoldResult(await uow.holds.get(req.branch), replayed=True)
        hold = new_hold(req, deps.clock())
        await apply_posting(
            uow, None, plan_posting(str(req.branch), [], refs, [hold.reservation()])
        )
        await uow.holds.add(hold)
        await uow.commit()
    return HoldResult(hold)


def _confirm_split(cmd: commands.ConfirmHold) -> tuple[tuple[Share, ...], str]:
    """The Confirm's validated shares and remainder account (both empty: all to the destination)."""
    if cmd.amount < 0:
        raise invalid("amount_minor", "must not be negative")
    shares = validated_shares(cmd.shares) if cmd.shares else ()  # (no call for none; issue 13)
    if shares:
        remainder_id = validate_account_id(cmd.remainder_account_id, "remainder_account_id")
        validate_shares(shares, remainder_id)
        return shares, remainder_id
    if cmd.remainder_account_id:
        raise invalid("remainder_account_id", "is only allowed with shares")
    return shares, ""


def _confirm_lines(
    hold: Hold, posted: int, credits: list[Part] | None, refs: dict[str, AccountRef]
) -> list[EntryLine]:
    """The debit of the hold's account and one credit per non-zero part of a split, each part
    checked; without a split (None), the one credit of the destination, checked the same way
    (no Part made, no list of credits run; issue 13)."""
    if credits is None:
        where = "destination_account_id"
        to = hold.destination_account_id
        require_accounts(refs, [(to, where)])
        if refs[to].unit != hold.unit:  # (check_unit called only to refuse)
            check_unit(refs[to], hold.unit, where)
        if to == hold.account_id:
            raise invalid(where, "must differ from the hold's account")
        # (posted > 0: hold.confirm validated it.)
        return [EntryLine(hold.account_id, hold.unit, -posted), EntryLine(to, hold.unit, posted)]
    for i, part in enumerate(credits):
        where = f"shares[{i}].to_account_id"
        require_accounts(refs, [(part.account_id, where)])
        check_unit(refs[part.account_id], hold.unit, where)
        if part.account_id == hold.account_id:
            raise invalid(where, "must differ from the hold's account")
    lines = [EntryLine(hold.account_id, hold.unit, -posted)]
    lines += [EntryLine(p.account_id, hold.unit, p.amount) for p in credits if p.amount]
    return lines


@dataclass(frozen=True, slots=True)
class ConfirmRequest:
    """A Confirm's validated fields and fingerprint (checked before any database work)."""

    branch: TccBranch
    amount: int
    shares: tuple[Share, ...]
    remainder_id: str
    fingerprint: Fingerprint


def confirm_request(cmd: commands.ConfirmHold) -> ConfirmRequest:
    """Validate a Confirm; VALIDATION_FAILED names the first bad field."""
    branch = cmd.branch.validated()
    shares, remainder_id = _confirm_split(cmd)
    print_ = fingerprint(
        {
            "amount_minor": cmd.amount,
            "shares": share_fields(shares) if shares else [],  # (no call for none; issue 13)
            "remainder_account_id": remainder_id,
        }
    )
    return ConfirmRequest(branch, cmd.amount, shares, remainder_id, print_)


def confirm_accounts(req: ConfirmRequest, hold: Hold) -> set[str]:
    """Every account a Confirm of `hold` may name."""
    if not req.shares:  # (the common case: no generator made and run; issue 13)
        return {hold.account_id, hold.destination_account_id}
    return {
        hold.account_id,
        hold.destination_account_id,
        *(s.account_id for s in req.shares),
        *([req.remainder_id] if req.remainder_id else []),
    }


def plan_confirm(
    req: ConfirmRequest,
    hold: Hold,
    refs: dict[str, AccountRef],
    now: datetime,
    shard_key: str | None = None,
) -> tuple[TransferHeader, Posting]:
    """Resolve the (locked, pending) hold as confirmed and plan the transfer that posts it.
    `shard_key` picks the shard of a sharded account it credits (a fee into the revenue account):
    by default its transfer id's; a group's own key puts every credit of the group in one."""
    posted = hold.confirm(req.amount, now)
    credits = split_amount(posted, req.shares, req.remainder_id) if req.shares else None
    lines = _confirm_lines(hold, posted, credits, refs)
    header = _confirm_header(hold, req.fingerprint)
    return header, plan_posting(shard_key or header.id, lines, refs, [hold.release()])


async def confirm_hold(cmd: commands.ConfirmHold, deps: Deps) -> HoldResult:
    """Confirm: post the hold (all or part, optionally split) and release the rest, once.

    The hold row is locked, so a racing Cancel or expiry resolves it before or after us, never both.
    """
    req = confirm_request(cmd)
    # Run again at most once: the hold that made a run give up is never deleted, and the next
    # run locks it before its barrier row.
    for _ in range(_RUNS):
        result = await _confirm_once(req, deps)
        if result is not None:
            return result
    raise AssertionError("a Confirm ran again and gave up again")


_RUNS = 2


async def _confirm_once(req: ConfirmRequest, deps: Deps) -> HoldResult | None:
    """One run of a Confirm; None, with nothing written, when it must run again (below)."""
    branch = req.branch
    async with deps.uow() as uow:
        # The hold locked before the barrier row, as every Confirm and Cancel path takes them
        # (a twin on another path no longer holds one while waiting for the other; issue 13).
        hold = await uow.holds.get(branch, for_update=True)
        if await enter_confirm(uow.barriers, branch, req.fingerprint) is ConfirmGate.REPLAY:
            return await replay_confirm(uow, branch)
        # None yet, or its Try committed since (while the gate waited for its row). Then it is
        # not locked in the one order: locked now, after the barrier row, a group holding it and
        # waiting for this row (a twin Confirm) and this call each waited for the other, a
        # deadlock (issue 13). So it is read without a lock, and if it is there the call gives
        # this run up (rolled back: nothing written) and runs again, finding it first.
        if hold is None and await uow.holds.get(branch) is not None:
            return None
        if hold is None:
            raise await missing_hold(uow, branch)
        refs = await uow.accounts.refs(confirm_accounts(req, hold))
        header, posting = plan_confirm(req, hold, refs, deps.clock())
        outcome = await apply_posting(uow, header.id, posting, claim=header)
        if outcome is None:  # only a Confirm writes this id, and the barrier admits one
            raise HirepayError(f"transfer {header.id} already exists", reason="TCC_INCONSISTENT")
        await uow.holds.save([hold])
        await uow.commit()
    created_at = outcome.created_at or deps.clock()
    return HoldResult(hold, transfer=transfer_record(header, created_at, outcome.entries))


def _confirm_header(hold: Hold, print_: Fingerprint) -> TransferHeader:
    """The transfer a Confirm posts: its id is derived from the branch (never a client's id), by
    `hold.confirm` just before (confirm_transfer_id), not derived a second time (issue 13)."""
    branch = hold.branch
    assert hold.transfer_id is not None  # (set by hold.confirm)
    return TransferHeader(
        id=hold.transfer_id,
        kind="hold",
        description=hold.description,
        metadata={"global_tx_id": branch.global_tx_id, "branch_id": branch.branch_id},
        fingerprint=print_,
    )


async def replay_confirm(uow: WalletUnitOfWork, branch: TccBranch) -> HoldResult:
    """A repeated Confirm (its fingerprint already checked by the gate): the stored outcome."""
    hold = await uow.holds.get(branch)
    stored = await uow.ledger.get_transfer(confirm_transfer_id(branch))
    return HoldResult(hold, replayed=True, transfer=stored.record if stored else None)


async def missing_hold(uow: WalletUnitOfWork, branch: TccBranch) -> HirepayError:
    """Why a branch has no hold: it was cancelled before any Try, or it never existed."""
    if await cancelled_before_try(uow.barriers, branch):
        return HoldCancelled(branch.global_tx_id, branch.branch_id)
    return HoldNotFound(branch.global_tx_id, branch.branch_id)


async def cancel_hold(cmd: commands.CancelHold, deps: Deps) -> HoldResult:
    """Cancel: release the hold; a Cancel before its Try is recorded and succeeds doing nothing.

    The gate first writes the branch's "try" row itself: if that succeeds, no Try ever ran (null
    compensation), and the row makes any late Try refuse (hanging). Then its own "cancel" row: if
    that exists, this is a repeat (whatever its reason) and the stored outcome is returned.
    """
    branch = cmd.branch.validated()
    for _ in range(_RUNS):  # (run again at most once, as a Confirm)
        result = await _cancel_once(branch, deps)
        if result is not None:
            return result
    raise AssertionError("a Cancel ran again and gave up again")


async def _cancel_once(branch: TccBranch, deps: Deps) -> HoldResult | None:
    """One run of a Cancel; None, with nothing written, when it must run again (below)."""
    async with deps.uow() as uow:
        # The hold locked before the Cancel's barrier row, as a group's Cancels and Confirms and
        # the one-statement Confirm take them: a twin holding the hold (a group whose refused
        # Confirm of it is followed by its Cancel) no longer waits for this row while this waits
        # for the hold (a deadlock, one of them aborted; issue 13). No round trip more.
        locked = await uow.holds.get(branch, for_update=True)
        gate = await enter_cancel(uow.barriers, branch)
        if gate is CancelGate.NULL_COMPENSATION:
            await uow.commit()
            return HoldResult(None, null_compensation=True)
        if locked is None:  # none yet, or its Try committed while the gate waited for its row
            locked = await uow.holds.get(branch)
            if locked is not None and gate is CancelGate.FIRST:
                # Not locked in the one order: locked now, after the barrier rows, a group
                # holding it and waiting for this Cancel's row (a twin) and this call each
                # waited for the other, a deadlock (issue 13). This run is given up (rolled
                # back: nothing written) and the call runs again, locking the hold first.
                return None
        if gate is CancelGate.REPLAY:
            return HoldResult(locked, replayed=True, null_compensation=locked is None)
        hold = cancel_locked(locked, branch, deps.clock())
        if hold.state is HoldState.CANCELLED:  # else it had expired: the money is free already
            refs = await uow.accounts.refs([hold.account_id])
            await apply_posting(uow, None, plan_posting(str(branch), [], refs, [hold.release()]))
            await uow.holds.save([hold])
        await uow.commit()
    return HoldResult(hold)


def cancel_locked(hold: Hold | None, branch: TccBranch, now: datetime) -> Hold:
    """A first Cancel's hold (locked), resolved as cancelled, or left expired (nothing to release,
    and the Cancel still succeeds); HOLD_ALREADY_RESOLVED once it was confirmed."""
    if hold is None:  # a Reserve wrote "try" and its hold in one transaction
        raise HirepayError(f"branch {branch} has a Try but no hold", reason="TCC_INCONSISTENT")
    hold.cancel(now)
    return hold


async def get_hold(query: commands.GetHold, deps: Deps) -> HoldResult:
    """A branch's hold (with its posted transfer once confirmed), or its null compensation."""
    branch = query.branch.validated()
    async with deps.uow() as uow:
        hold = await uow.holds.get(branch)
        if hold is not None:
            stored = None
            if hold.transfer_id:
                stored = await uow.ledger.get_transfer(hold.transfer_id)
            return HoldResult(hold, transfer=stored.record if stored else None)
        error = await missing_hold(uow, branch)
    if isinstance(error, HoldCancelled):
        return HoldResult(None, null_compensation=True)
    raise error
