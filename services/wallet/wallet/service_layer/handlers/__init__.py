"""The wallet's use cases, one module per seam; every handler is `async def name(cmd, deps)`."""

from wallet.service_layer.handlers.accounts import (
    OpenAccountResult,
    get_account,
    list_accounts,
    open_account,
)
from wallet.service_layer.handlers.batches import BatchOutcome, create_transfers
from wallet.service_layer.handlers.common import Page, apply_posting
from wallet.service_layer.handlers.expiry import release_expired_holds
from wallet.service_layer.handlers.grouped_holds import (
    confirm_holds,
    create_holds,
    reserve_holds,
    resolve_holds,
)
from wallet.service_layer.handlers.holds import (
    HoldResult,
    cancel_hold,
    confirm_hold,
    get_hold,
    reserve_hold,
)
from wallet.service_layer.handlers.transfers import (
    TransferResult,
    get_transfer,
    list_entries,
    split_transfer,
    transfer,
)

__all__ = [
    "BatchOutcome",
    "HoldResult",
    "OpenAccountResult",
    "Page",
    "TransferResult",
    "apply_posting",
    "cancel_hold",
    "confirm_hold",
    "confirm_holds",
    "create_holds",
    "create_transfers",
    "get_account",
    "get_hold",
    "get_transfer",
    "list_accounts",
    "list_entries",
    "open_account",
    "release_expired_holds",
    "reserve_hold",
    "reserve_holds",
    "resolve_holds",
    "split_transfer",
    "transfer",
]
