"""Use cases of accounts: open one (idempotent on owner, unit and kind), read one, list an owner's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from hirepay_platform import money, paging
from hirepay_platform.errors import Conflict
from hirepay_platform.tcc import IdempotencyMismatch
from wallet.domain import commands
from wallet.domain.errors import AccountNotFound
from wallet.domain.model import Account, NewAccount, validate_account_id, validate_owner_id
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.common import Page, cursor_position


@dataclass(frozen=True, slots=True)
class OpenAccountResult:
    """The account, and whether this call opened it (False: it existed already)."""

    account: Account
    created: bool


async def open_account(cmd: commands.OpenAccount, deps: Deps) -> OpenAccountResult:
    """Open an account; idempotent on (owner, unit, kind)."""
    owner_id = validate_owner_id(cmd.owner_id)
    unit = money.validate_unit(cmd.unit, field="currency")
    new = NewAccount(str(uuid.uuid4()), owner_id, unit, cmd.kind, cmd.allow_negative)
    async with deps.uow() as uow:
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


async def get_account(query: commands.GetAccount, deps: Deps) -> Account:
    """An account with its balance."""
    account_id = validate_account_id(query.account_id)
    async with deps.uow() as uow:
        account = await uow.accounts.get(account_id)
    if account is None:
        raise AccountNotFound(account_id)
    return account


async def list_accounts(query: commands.ListAccounts, deps: Deps) -> Page[Account]:
    """An owner's accounts, oldest first, keyset-paginated."""
    owner_id = validate_owner_id(query.owner_id)
    size = paging.page_size(query.page_size)
    cursor = paging.decode_token(query.page_token)
    after = cursor_position(cursor, scope=f"accounts:{owner_id}")
    async with deps.uow() as uow:
        rows = await uow.accounts.list_by_owner(owner_id, after, size + 1)
    token = ""
    if len(rows) > size:
        rows = rows[:size]
        token = paging.encode_token({"s": f"accounts:{owner_id}", "p": rows[-1][0]})
    return Page([account for _, account in rows], token)
