"""Use cases of the wallet: each handler is one local transaction through the unit of work.

Idempotency and the TCC guard are insert-first on unique keys inside the same transaction as the
money movement, never check-then-write: a twin request blocks on the key until the first commits or
rolls back, then either sees the stored outcome or proceeds as if it were first.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from hirepay_platform import money, paging
from hirepay_platform.errors import Conflict, HirepayError
from wallet.domain import commands
from wallet.domain.errors import (
    AccountNotFound,
    HoldCancelled,
    HoldNotFound,
    IdempotencyMismatch,
    InsufficientFunds,
    TransferNotFound,
    UnitMismatch,
    invalid,
)
from wallet.domain.fingerprint import Fingerprint, fingerprint, first_mismatch
from wallet.domain.model import (
    Account,
    AccountRef,
    Entry,
    EntryLine,
    Hold,
    Leg,
    NewAccount,
    Posting,
    TccBranch,
    TccOp,
    TransferRecord,
    confirm_transfer_id,
    entries_for_legs,
    hold_ttl,
    plan_posting,
    require_accounts,
    validate_account_id,
    validate_client_id,
    validate_description,
    validate_metadata,
    validate_owner_id,
)
from wallet.domain.splits import Part, Share, split_amount, validate_shares
from wallet.service_layer.unit_of_work import PostOutcome, TransferHeader, WalletUnitOfWork

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OpenAccountResult:
    account: Account
    created: bool


@dataclass(frozen=True, slots=True)
class TransferResult:
    transfer: TransferRecord
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class HoldResult:
    """A hold after a TCC call; `hold` is None after a null compensation."""

    hold: Hold | None
    replayed: bool = False
    null_compensation: bool = False
    transfer: TransferRecord | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


# --- shared steps ----------------------------------------------------------------------------


async def apply_posting(
    uow: WalletUnitOfWork,
    transfer_id: str | None,
    posting: Posting,
    claim: TransferHeader | None = None,
) -> PostOutcome | None:
    """Apply a posting, or raise INSUFFICIENT_FUNDS (the unit of work then rolls everything back).

    With `claim`, the transfer id is claimed first (insert-first on its unique key); None means the
    id was already taken and nothing was applied. On the hot path the claim and the posting are one
    statement, one round trip.

    Ordinary accounts are checked by the conditional UPDATE itself. A sharded account that may not
    go negative keeps its balance in shards, so a debit of it first locks its row (serialising such
    debits; credits never take that lock) and checks the shard sum read after the lock. That slow
    path claims the id on its own first, so a twin request waits on the id, never on a row lock.
    """
    if posting.guarded_sharded:
        if claim is not None:
            if await uow.ledger.claim_transfer(claim) is None:
                return None
            claim = None
        # Lock every row the posting touches, in id order, so the order matches post()'s.
        balances = await uow.ledger.lock_balances([c.account_id for c in posting.row_changes])
        for account_id in posting.guarded_sharded:
            change = sum(s.posted for s in posting.shard_changes if s.account_id == account_id)
            change -= sum(c.pending for c in posting.row_changes if c.account_id == account_id)
            if balances[account_id].available + change < 0:
                raise InsufficientFunds(account_id)
    outcome = await uow.ledger.post(transfer_id, posting, claim)
    if not outcome.claimed:
        return None
    if outcome.rejected:
        raise InsufficientFunds(outcome.rejected[0])
    return outcome


def _record(
    header: TransferHeader, created_at: datetime, entries: Iterable[Entry]
) -> TransferRecord:
    return TransferRecord(
        id=header.id,
        description=header.description,
        metadata=dict(header.metadata),
        created_at=created_at,
        entries=tuple(dataclasses.replace(e, description=header.description) for e in entries),
    )


async def _post_transfer(
    uow: WalletUnitOfWork,
    header: TransferHeader,
    lines: list[EntryLine],
    refs: dict[str, AccountRef],
) -> TransferResult:
    """Claim the transfer id and post; a taken id answers with the stored transfer instead."""
    posting = plan_posting(header.id, lines, refs)
    outcome = await apply_posting(uow, header.id, posting, claim=header)
    if outcome is None:
        return await _replay_transfer(uow, header)
    await uow.commit()
    return TransferResult(_record(header, outcome.created_at or uow.clock(), outcome.entries))


async def _replay_transfer(uow: WalletUnitOfWork, header: TransferHeader) -> TransferResult:
    stored = await uow.ledger.get_transfer(header.id)
    if stored is None:  # the claim conflicted, so a committed row exists; never expected
        raise Conflict(f"transfer {header.id} is being written; retry")
    field = first_mismatch(stored.fingerprint, header.fingerprint)
    if field is not None:
        raise IdempotencyMismatch(f"transfer_id {header.id}", field)
    return TransferResult(stored.record, replayed=True)


def _check_unit(account: AccountRef, unit: str, field: str) -> None:
    if account.unit != unit:
        raise UnitMismatch(field, account.unit, unit)


def _validated_shares(shares: Iterable[Share]) -> tuple[Share, ...]:
    return tuple(
        Share(validate_account_id(s.account_id, f"shares[{i}].to_account_id"), s.basis_points)
        for i, s in enumerate(shares)
    )


def _share_fields(shares: Iterable[Share]) -> list[list[object]]:
    return [[s.account_id, s.basis_points] for s in shares]


# --- accounts --------------------------------------------------------------------------------


async def open_account(cmd: commands.OpenAccount, uow: WalletUnitOfWork) -> OpenAccountResult:
    """Open an account; idempotent on (owner, unit, kind)."""
    owner_id = validate_owner_id(cmd.owner_id)
    unit = money.validate_unit(cmd.unit, field="currency")
    new = NewAccount(str(uuid.uuid4()), owner_id, unit, cmd.kind, cmd.allow_negative)
    async with uow:
        account = await uow.accounts.add(new)
        if account is not None:
            await uow.commit()
            return OpenAccountResult(account, created=True)
        existing = await uow.accounts.find(owner_id, unit, cmd.kind)
    if existing is None:  # an insert conflicted with a row we cannot see: never expected
        raise Conflict("account is being opened concurrently; retry")
    if existing.ref.allow_negative != cmd.allow_negative:
        raise IdempotencyMismatch(f"account {owner_id}/{unit}/{cmd.kind.value}", "allow_negative")
    return OpenAccountResult(existing, created=False)


async def get_account(query: commands.GetAccount, uow: WalletUnitOfWork) -> Account:
    account_id = validate_account_id(query.account_id)
    async with uow:
        account = await uow.accounts.get(account_id)
    if account is None:
        raise AccountNotFound(account_id)
    return account


async def list_accounts(query: commands.ListAccounts, uow: WalletUnitOfWork) -> Page[Account]:
    owner_id = validate_owner_id(query.owner_id)
    size = paging.page_size(query.page_size)
    cursor = paging.decode_token(query.page_token)
    after = _cursor_position(cursor, scope=f"accounts:{owner_id}")
    async with uow:
        rows = await uow.accounts.list_by_owner(owner_id, after, size + 1)
    token = ""
    if len(rows) > size:
        rows = rows[:size]
        token = paging.encode_token({"s": f"accounts:{owner_id}", "p": rows[-1][0]})
    return Page([account for _, account in rows], token)


def _cursor_position(cursor: dict[str, object] | None, *, scope: str) -> int | None:
    """The keyset position in a page token, which must belong to the same listing."""
    if cursor is None:
        return None
    position = cursor.get("p")
    if cursor.get("s") != scope or not isinstance(position, int) or isinstance(position, bool):
        raise invalid("page_token", "does not belong to this listing")
    return position


# --- transfers -------------------------------------------------------------------------------


async def transfer(cmd: commands.Transfer, uow: WalletUnitOfWork) -> TransferResult:
    """Post a multi-leg transfer atomically; a retry with the same id and fields is answered with
    the original transfer (replayed), the same id with other fields is refused."""
    transfer_id = validate_client_id(cmd.transfer_id, "transfer_id")
    legs = tuple(
        Leg(
            validate_account_id(leg.from_account_id, f"legs[{i}].from_account_id"),
            validate_account_id(leg.to_account_id, f"legs[{i}].to_account_id"),
            leg.amount,
            leg.unit,
        )
        for i, leg in enumerate(cmd.legs)
    )
    header = TransferHeader(
        id=transfer_id,
        kind="transfer",
        description=validate_description(cmd.description),
        metadata=validate_metadata(cmd.metadata),
        fingerprint=fingerprint(
            {
                "operation": "Transfer",
                "legs": [[g.from_account_id, g.to_account_id, g.amount, g.unit] for g in legs],
                "description": cmd.description,
                "metadata": dict(cmd.metadata),
            }
        ),
    )
    async with uow:
        ids = {g.from_account_id for g in legs} | {g.to_account_id for g in legs}
        refs = await uow.accounts.refs(ids)
        lines = entries_for_legs(legs, refs)
        return await _post_transfer(uow, header, lines, refs)


async def split_transfer(cmd: commands.SplitTransfer, uow: WalletUnitOfWork) -> TransferResult:
    """Debit one account and credit several by basis points; the remainder goes to its account."""
    transfer_id = validate_client_id(cmd.transfer_id, "transfer_id")
    from_id = validate_account_id(cmd.from_account_id, "from_account_id")
    shares = _validated_shares(cmd.shares)
    remainder_id = validate_account_id(cmd.remainder_account_id, "remainder_account_id")
    money.validate_unit(cmd.unit, field="total.currency")
    parts = split_amount(cmd.total, shares, remainder_id)
    for i, share in enumerate(shares):
        if share.account_id == from_id:
            raise invalid(f"shares[{i}].to_account_id", "must differ from from_account_id")
    header = TransferHeader(
        id=transfer_id,
        kind="split",
        description=validate_description(cmd.description),
        metadata=validate_metadata(cmd.metadata),
        fingerprint=fingerprint(
            {
                "operation": "SplitTransfer",
                "from_account_id": from_id,
                "total": [cmd.total, cmd.unit],
                "shares": _share_fields(shares),
                "remainder_account_id": remainder_id,
                "description": cmd.description,
                "metadata": dict(cmd.metadata),
            }
        ),
    )
    async with uow:
        refs = await uow.accounts.refs({from_id, *(s.account_id for s in shares)})
        require_accounts(
            refs,
            [(from_id, "from_account_id")]
            + [(s.account_id, f"shares[{i}].to_account_id") for i, s in enumerate(shares)],
        )
        _check_unit(refs[from_id], cmd.unit, "total.currency")
        lines = _split_lines(from_id, cmd.unit, parts, refs)
        return await _post_transfer(uow, header, lines, refs)


def _split_lines(
    from_id: str, unit: str, parts: list[Part], refs: dict[str, AccountRef]
) -> list[EntryLine]:
    """One debit of the whole and one credit per non-zero part."""
    lines = [EntryLine(from_id, unit, -sum(p.amount for p in parts))]
    for i, part in enumerate(parts):
        _check_unit(refs[part.account_id], unit, f"shares[{i}].to_account_id")
        if part.amount:
            lines.append(EntryLine(part.account_id, unit, part.amount))
    return lines


async def get_transfer(query: commands.GetTransfer, uow: WalletUnitOfWork) -> TransferRecord:
    if not query.transfer_id:
        raise invalid("transfer_id", "is required")
    async with uow:
        stored = await uow.ledger.get_transfer(query.transfer_id)
    if stored is None:
        raise TransferNotFound(query.transfer_id)
    return stored.record


async def list_entries(query: commands.ListEntries, uow: WalletUnitOfWork) -> Page[Entry]:
    """An account's history, newest first, keyset-paginated on the entry id."""
    account_id = validate_account_id(query.account_id)
    size = paging.page_size(query.page_size)
    before = _cursor_position(paging.decode_token(query.page_token), scope=f"entries:{account_id}")
    async with uow:
        if not await uow.accounts.refs([account_id]):
            raise AccountNotFound(account_id)
        entries = await uow.ledger.list_entries(account_id, before, size + 1)
    token = ""
    if len(entries) > size:
        entries = entries[:size]
        token = paging.encode_token({"s": f"entries:{account_id}", "p": entries[-1].id})
    return Page(entries, token)


# --- holds: Try / Confirm / Cancel -----------------------------------------------------------


def _check_replay(stored: Fingerprint, current: Fingerprint, branch: TccBranch) -> None:
    field = first_mismatch(stored, current)
    if field is not None:
        raise IdempotencyMismatch(f"branch {branch}", field)


async def reserve_hold(cmd: commands.ReserveHold, uow: WalletUnitOfWork) -> HoldResult:
    """Try: reserve the amount (it stops being available) under the TCC barrier.

    The barrier row (branch, "try") is inserted first. If it already exists, either this is a
    repeat (answered with the hold) or a Cancel got there first (hanging Try): reserve nothing.
    """
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
    async with uow:
        refs = await uow.accounts.refs([account_id, destination_id])
        require_accounts(
            refs, [(account_id, "account_id"), (destination_id, "destination_account_id")]
        )
        _check_unit(refs[account_id], cmd.unit, "amount.currency")
        _check_unit(refs[destination_id], cmd.unit, "amount.currency")
        if not await uow.barriers.insert(branch, TccOp.TRY, TccOp.TRY, print_):
            barrier = await uow.barriers.get(branch, TccOp.TRY)
            if barrier is None:
                raise Conflict(f"branch {branch} is being written; retry")
            if barrier.origin is TccOp.CANCEL:
                raise HoldCancelled(branch.global_tx_id, branch.branch_id)
            _check_replay(barrier.fingerprint, print_, branch)
            return HoldResult(await uow.holds.get(branch), replayed=True)
        now = uow.clock()
        hold = Hold(
            branch=branch,
            account_id=account_id,
            destination_account_id=destination_id,
            unit=cmd.unit,
            amount=cmd.amount,
            expires_at=now + ttl,
            created_at=now,
            description=description,
        )
        await apply_posting(uow, None, plan_posting(str(branch), [], refs, [hold.reservation()]))
        await uow.holds.add(hold)
        await uow.commit()
    return HoldResult(hold)


async def confirm_hold(cmd: commands.ConfirmHold, uow: WalletUnitOfWork) -> HoldResult:
    """Confirm: post the hold (all or part, optionally split) and release the rest, once.

    The hold row is locked, so a racing Cancel or expiry resolves it before or after us, never both.
    """
    branch = cmd.branch.validated()
    if cmd.amount < 0:
        raise invalid("amount_minor", "must not be negative")
    shares = _validated_shares(cmd.shares)
    remainder_id = ""
    if shares:
        remainder_id = validate_account_id(cmd.remainder_account_id, "remainder_account_id")
        validate_shares(shares, remainder_id)
    elif cmd.remainder_account_id:
        raise invalid("remainder_account_id", "is only allowed with shares")
    print_ = fingerprint(
        {
            "amount_minor": cmd.amount,
            "shares": _share_fields(shares),
            "remainder_account_id": remainder_id,
        }
    )
    async with uow:
        if not await uow.barriers.insert(branch, TccOp.CONFIRM, TccOp.CONFIRM, print_):
            return await _replay_confirm(uow, branch, print_)
        hold = await uow.holds.get(branch, for_update=True)
        if hold is None:
            raise await _missing_hold(uow, branch)
        posted = hold.confirm(cmd.amount, uow.clock())
        credits = [Part(hold.destination_account_id, posted)]
        if shares:
            credits = split_amount(posted, shares, remainder_id)
        refs = await uow.accounts.refs(
            {hold.account_id, hold.destination_account_id, *(p.account_id for p in credits)}
        )
        for i, part in enumerate(credits):
            where = f"shares[{i}].to_account_id" if shares else "destination_account_id"
            require_accounts(refs, [(part.account_id, where)])
            _check_unit(refs[part.account_id], hold.unit, where)
            if part.account_id == hold.account_id:
                raise invalid(where, "must differ from the hold's account")
        lines = [EntryLine(hold.account_id, hold.unit, -posted)]
        lines += [EntryLine(p.account_id, hold.unit, p.amount) for p in credits if p.amount]
        header = TransferHeader(
            id=confirm_transfer_id(branch),
            kind="hold",
            description=hold.description,
            metadata={"global_tx_id": branch.global_tx_id, "branch_id": branch.branch_id},
            fingerprint=print_,
        )
        posting = plan_posting(header.id, lines, refs, [hold.release()])
        outcome = await apply_posting(uow, header.id, posting, claim=header)
        if outcome is None:  # only a Confirm writes this id, and the barrier admits one
            raise HirepayError(f"transfer {header.id} already exists", reason="TCC_INCONSISTENT")
        await uow.holds.save([hold])
        await uow.commit()
    created_at = outcome.created_at or uow.clock()
    return HoldResult(hold, transfer=_record(header, created_at, outcome.entries))


async def _replay_confirm(
    uow: WalletUnitOfWork, branch: TccBranch, print_: Fingerprint
) -> HoldResult:
    barrier = await uow.barriers.get(branch, TccOp.CONFIRM)
    if barrier is None:
        raise Conflict(f"branch {branch} is being confirmed; retry")
    _check_replay(barrier.fingerprint, print_, branch)
    hold = await uow.holds.get(branch)
    stored = await uow.ledger.get_transfer(confirm_transfer_id(branch))
    return HoldResult(hold, replayed=True, transfer=stored.record if stored else None)


async def _missing_hold(uow: WalletUnitOfWork, branch: TccBranch) -> HirepayError:
    """Why a branch has no hold: it was cancelled before any Try, or it never existed."""
    barrier = await uow.barriers.get(branch, TccOp.TRY)
    if barrier is not None and barrier.origin is TccOp.CANCEL:
        return HoldCancelled(branch.global_tx_id, branch.branch_id)
    return HoldNotFound(branch.global_tx_id, branch.branch_id)


async def cancel_hold(cmd: commands.CancelHold, uow: WalletUnitOfWork) -> HoldResult:
    """Cancel: release the hold; a Cancel before its Try is recorded and succeeds doing nothing.

    First the Cancel inserts the branch's "try" row itself: if that succeeds, no Try ever ran
    (null compensation), and the row makes any late Try refuse (hanging). Then it inserts its own
    "cancel" row: if that exists, this is a repeat and the stored outcome is returned.
    """
    branch = cmd.branch.validated()
    print_ = fingerprint({})  # a repeated Cancel always succeeds, whatever its reason
    async with uow:
        if await uow.barriers.insert(branch, TccOp.TRY, TccOp.CANCEL, print_):
            await uow.barriers.insert(branch, TccOp.CANCEL, TccOp.CANCEL, print_)
            await uow.commit()
            return HoldResult(None, null_compensation=True)
        if not await uow.barriers.insert(branch, TccOp.CANCEL, TccOp.CANCEL, print_):
            hold = await uow.holds.get(branch)
            return HoldResult(hold, replayed=True, null_compensation=hold is None)
        hold = await uow.holds.get(branch, for_update=True)
        if hold is None:  # a Reserve wrote "try" and its hold in one transaction
            raise HirepayError(f"branch {branch} has a Try but no hold", reason="TCC_INCONSISTENT")
        if hold.cancel(uow.clock()):
            refs = await uow.accounts.refs([hold.account_id])
            await apply_posting(uow, None, plan_posting(str(branch), [], refs, [hold.release()]))
            await uow.holds.save([hold])
        await uow.commit()
    return HoldResult(hold)


async def get_hold(query: commands.GetHold, uow: WalletUnitOfWork) -> HoldResult:
    branch = query.branch.validated()
    async with uow:
        hold = await uow.holds.get(branch)
        if hold is not None:
            stored = None
            if hold.transfer_id:
                stored = await uow.ledger.get_transfer(hold.transfer_id)
            return HoldResult(hold, transfer=stored.record if stored else None)
        error = await _missing_hold(uow, branch)
    if isinstance(error, HoldCancelled):
        return HoldResult(None, null_compensation=True)
    raise error


async def release_expired_holds(uow: WalletUnitOfWork, *, batch_size: int = 100) -> int:
    """Release one batch of pending holds past their expiry; returns how many were released.

    Safe with several workers at once: each locks its batch with SKIP LOCKED, and a Confirm or
    Cancel holding a hold's lock makes the worker skip that hold rather than wait.
    """
    async with uow:
        now = uow.clock()
        holds = await uow.holds.lock_expired(now, batch_size)
        if not holds:
            return 0
        for hold in holds:
            hold.expire(now)
        refs = await uow.accounts.refs({h.account_id for h in holds})
        changes = [h.release() for h in holds]
        await apply_posting(uow, None, plan_posting("expiry", [], refs, changes))
        await uow.holds.save(holds)
        await uow.commit()
    return len(holds)
