"""SEC-2 inside the wallet: what the verified caller of a read may see. Through the gateway a user
reads only their own wallet (another owner's answers as an empty one, so a stranger learns
nothing, not even that it exists), and only admins read the admin reports; jobs and payments,
acting for themselves, read everything (their access is granted by the RPC's policy)."""

from __future__ import annotations

from hirepay_platform.errors import PermissionDenied
from hirepay_platform.identity import Caller
from wallet.domain import commands
from wallet.domain.model import Account
from wallet.domain.reports import LedgerLine
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers import reports
from wallet.service_layer.handlers.common import Page


async def wallet_summary(
    caller: Caller, query: commands.GetWalletSummary, deps: Deps
) -> list[Account]:
    """The owner's wallet for the owner, an admin or an internal caller; empty for anyone else."""
    if not caller.reaches(query.owner_id):
        return []
    return await reports.wallet_summary(query, deps)


async def wallet_transactions(
    caller: Caller, query: commands.ListWalletTransactions, deps: Deps
) -> Page[LedgerLine]:
    """The owner's history for the owner, an admin or an internal caller; empty for anyone else."""
    if not caller.reaches(query.owner_id):
        return Page([], "")
    return await reports.list_wallet_transactions(query, deps)


def check_admin(caller: Caller) -> None:
    """Admin reports: through the gateway only for admins; an internal caller's access is granted
    by the RPC's policy."""
    if caller.is_edge and not caller.user.is_admin:
        raise PermissionDenied("admins only")
