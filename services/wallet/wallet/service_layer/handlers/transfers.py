"""Use cases of transfers: post a multi-leg or split transfer (idempotent on its transfer id), read a
transfer, read an account's history."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from hirepay_platform import money, paging
from hirepay_platform.errors import Conflict
from hirepay_platform.fingerprint import fingerprint, first_mismatch
from hirepay_platform.tcc import IdempotencyMismatch
from wallet.domain import commands
from wallet.domain.errors import AccountNotFound, TransferNotFound, invalid
from wallet.domain.ledger import (
    Entry,
    EntryLine,
    Leg,
    TransferRecord,
    entries_for_legs,
    plan_posting,
)
from wallet.domain.model import (
    AccountRef,
    require_accounts,
    validate_account_id,
    validate_client_id,
    validate_description,
    validate_metadata,
)
from wallet.domain.splits import Part, split_amount
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.common import (
    Page,
    apply_posting,
    check_unit,
    cursor_position,
    share_fields,
    transfer_record,
    validated_shares,
)
from wallet.service_layer.ports import TransferHeader, WalletUnitOfWork


@dataclass(frozen=True, slots=True)
class TransferResult:
    """A posted transfer; `replayed` when an earlier identical request had posted it."""

    transfer: TransferRecord
    replayed: bool = False


async def _post_transfer(
    uow: WalletUnitOfWork,
    header: TransferHeader,
    lines: list[EntryLine],
    refs: dict[str, AccountRef],
    now: datetime,
) -> TransferResult:
    """Claim the transfer id and post; a taken id answers with the stored transfer instead."""
    posting = plan_posting(header.id, lines, refs)
    outcome = await apply_posting(uow, header.id, posting, claim=header)
    if outcome is None:
        return await replay_transfer(uow, header)
    await uow.commit()
    return TransferResult(transfer_record(header, outcome.created_at or now, outcome.entries))


async def replay_transfer(uow: WalletUnitOfWork, header: TransferHeader) -> TransferResult:
    stored = await uow.ledger.get_transfer(header.id)
    if stored is None:  # the claim conflicted, so a committed row exists; never expected
        raise Conflict(f"transfer {header.id} is being written; retry")
    field = first_mismatch(stored.fingerprint, header.fingerprint)
    if field is not None:
        raise IdempotencyMismatch(f"transfer_id {header.id}", field)
    return TransferResult(stored.record, replayed=True)


def transfer_header(cmd: commands.Transfer) -> tuple[TransferHeader, tuple[Leg, ...]]:
    """A Transfer's validated header (id, description, metadata, fingerprint) and legs."""
    transfer_id = validate_client_id(cmd.transfer_id, "transfer_id")
    legs = tuple([_validated_leg(leg, i) for i, leg in enumerate(cmd.legs)])
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
    return header, legs


def _validated_leg(leg: Leg, i: int) -> Leg:
    """The leg with its account ids in canonical form: the leg itself when they are (as the
    wallet writes them, the usual case; a new Leg per leg was a Python call; issue 13)."""
    from_id = validate_account_id(leg.from_account_id, f"legs[{i}].from_account_id")
    to_id = validate_account_id(leg.to_account_id, f"legs[{i}].to_account_id")
    if from_id is leg.from_account_id and to_id is leg.to_account_id:
        return leg
    return Leg(from_id, to_id, leg.amount, leg.unit)


def legs_accounts(legs: Iterable[Leg]) -> set[str]:
    """Every account a transfer's legs name."""
    return {a for g in legs for a in (g.from_account_id, g.to_account_id)}


async def transfer(cmd: commands.Transfer, deps: Deps) -> TransferResult:
    """Post a multi-leg transfer atomically; a retry with the same id and fields is answered with
    the original transfer (replayed), the same id with other fields is refused."""
    header, legs = transfer_header(cmd)
    async with deps.uow() as uow:
        refs = await uow.accounts.refs(legs_accounts(legs))
        lines = entries_for_legs(legs, refs)
        return await _post_transfer(uow, header, lines, refs, deps.clock())


async def split_transfer(cmd: commands.SplitTransfer, deps: Deps) -> TransferResult:
    """Debit one account and credit several by basis points; the remainder goes to its account."""
    transfer_id = validate_client_id(cmd.transfer_id, "transfer_id")
    from_id = validate_account_id(cmd.from_account_id, "from_account_id")
    shares = validated_shares(cmd.shares)
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
                "shares": share_fields(shares),
                "remainder_account_id": remainder_id,
                "description": cmd.description,
                "metadata": dict(cmd.metadata),
            }
        ),
    )
    async with deps.uow() as uow:
        refs = await uow.accounts.refs({from_id, *(s.account_id for s in shares)})
        require_accounts(
            refs,
            [(from_id, "from_account_id")]
            + [(s.account_id, f"shares[{i}].to_account_id") for i, s in enumerate(shares)],
        )
        check_unit(refs[from_id], cmd.unit, "total.currency")
        lines = _split_lines(from_id, cmd.unit, parts, refs)
        return await _post_transfer(uow, header, lines, refs, deps.clock())


def _split_lines(
    from_id: str, unit: str, parts: list[Part], refs: dict[str, AccountRef]
) -> list[EntryLine]:
    """One debit of the whole and one credit per non-zero part."""
    lines = [EntryLine(from_id, unit, -sum(p.amount for p in parts))]
    for i, part in enumerate(parts):
        check_unit(refs[part.account_id], unit, f"shares[{i}].to_account_id")
        if part.amount:
            lines.append(EntryLine(part.account_id, unit, part.amount))
    return lines


async def get_transfer(query: commands.GetTransfer, deps: Deps) -> TransferRecord:
    """A transfer with its entries."""
    if not query.transfer_id:
        raise invalid("transfer_id", "is required")
    async with deps.uow() as uow:
        stored = await uow.ledger.get_transfer(query.transfer_id)
    if stored is None:
        raise TransferNotFound(query.transfer_id)
    return stored.record


async def list_entries(query: commands.ListEntries, deps: Deps) -> Page[Entry]:
    """An account's history, newest first, keyset-paginated on the entry id."""
    account_id = validate_account_id(query.account_id)
    size = paging.page_size(query.page_size)
    before = cursor_position(paging.decode_token(query.page_token), scope=f"entries:{account_id}")
    async with deps.uow() as uow:
        if not await uow.accounts.refs([account_id]):
            raise AccountNotFound(account_id)
        entries = await uow.ledger.list_entries(account_id, before, size + 1)
    token = ""
    if len(entries) > size:
        entries = entries[:size]
        token = paging.encode_token({"s": f"entries:{account_id}", "p": entries[-1].id})
    return Page(entries, token)
