"""Use cases of the ledger's readers (ESC-11): a user's wallet and history; for admins every
balance, every entry and the commission earned. Read-only; who may ask is service_layer/access.py.

Histories are keyset-paged on the entry id, newest first: a page token holds the last id shown, so
entries posted while a reader pages never shift, repeat or hide the ones already committed.
"""

from __future__ import annotations

from hirepay_platform import paging
from wallet.domain import commands
from wallet.domain.model import Account, AccountKind, validate_owner_id
from wallet.domain.reports import (
    AccountFilter,
    Earnings,
    EntryFilter,
    LedgerLine,
    optional_owner,
    optional_unit,
    totals_of,
    validate_range,
    validate_window,
)
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.common import Page, cursor_position


async def wallet_summary(query: commands.GetWalletSummary, deps: Deps) -> list[Account]:
    """The owner's USER accounts (one per unit) with posted, held and available balances."""
    owner_id = validate_owner_id(query.owner_id)
    async with deps.uow() as uow:
        return await uow.reports.wallet_accounts(owner_id)


async def list_wallet_transactions(
    query: commands.ListWalletTransactions, deps: Deps
) -> Page[LedgerLine]:
    """The owner's entries across their USER accounts, newest first."""
    validate_window(query.since, query.until)
    where = EntryFilter(
        owner_id=validate_owner_id(query.owner_id),
        unit=optional_unit(query.unit),
        kind=AccountKind.USER,
        since=query.since,
        until=query.until,
    )
    return await _lines_page(where, query.page_size, query.page_token, deps)


async def list_transactions(query: commands.ListTransactions, deps: Deps) -> Page[LedgerLine]:
    """Every entry matching the filters, newest first (admin)."""
    validate_window(query.since, query.until)
    where = EntryFilter(
        owner_id=optional_owner(query.owner_id),
        unit=optional_unit(query.unit),
        kind=query.kind,
        since=query.since,
        until=query.until,
    )
    return await _lines_page(where, query.page_size, query.page_token, deps)


async def _lines_page(
    where: EntryFilter, page_size: int, page_token: str, deps: Deps
) -> Page[LedgerLine]:
    size = paging.page_size(page_size)
    scope = where.scope()
    before = cursor_position(paging.decode_token(page_token), scope=scope)
    async with deps.uow() as uow:
        lines = await uow.reports.lines(where, before, size + 1)
    token = ""
    if len(lines) > size:
        lines = lines[:size]
        token = paging.encode_token({"s": scope, "p": lines[-1].entry_id})
    return Page(lines, token)


async def list_balances(query: commands.ListBalances, deps: Deps) -> Page[Account]:
    """Every account matching the filters with its balance, oldest first (admin)."""
    where = AccountFilter(
        kind=query.kind, unit=optional_unit(query.unit), owner_id=optional_owner(query.owner_id)
    )
    size = paging.page_size(query.page_size)
    scope = where.scope()
    after = cursor_position(paging.decode_token(query.page_token), scope=scope)
    async with deps.uow() as uow:
        rows = await uow.reports.balances(where, after, size + 1)
    token = ""
    if len(rows) > size:
        rows = rows[:size]
        token = paging.encode_token({"s": scope, "p": rows[-1][0]})
    return Page([account for _, account in rows], token)


async def commission_earnings(query: commands.GetCommissionEarnings, deps: Deps) -> Earnings:
    """Platform revenue's credits (fees) and debits (refunded fees) per period and unit, with the
    range's totals per unit (admin)."""
    validate_range(query.since, query.until, query.period)
    assert query.since is not None and query.until is not None  # validate_range refused None
    async with deps.uow() as uow:
        buckets = await uow.reports.earnings(query.since, query.until, query.period)
    return Earnings(buckets, totals_of(buckets, query.since))
