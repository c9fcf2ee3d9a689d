"""Commands and queries: what a caller asks the wallet to do, in domain types (no protobuf)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from hirepay_platform.tcc import TccBranch
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind
from wallet.domain.reports import Period
from wallet.domain.splits import Share


@dataclass(frozen=True, slots=True)
class OpenAccount:
    """Open an account, or return the one this owner already has for the unit and kind."""

    owner_id: str
    unit: str
    kind: AccountKind
    allow_negative: bool = False


@dataclass(frozen=True, slots=True)
class Transfer:
    """Move money along one or more legs atomically; `transfer_id` is the idempotency key."""

    transfer_id: str
    legs: tuple[Leg, ...]
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreateTransfers:
    """Post many independent transfers in one local transaction, each with its own id and outcome
    (a refused transfer fails alone); applied in the given order."""

    transfers: tuple[Transfer, ...]


@dataclass(frozen=True, slots=True)
class SplitTransfer:
    """Move `total` from one account to several, split by basis points."""

    transfer_id: str
    from_account_id: str
    total: int
    unit: str
    shares: tuple[Share, ...]
    remainder_account_id: str
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReserveHold:
    """Try: reserve `amount` on an account for a branch of a global transaction."""

    branch: TccBranch
    account_id: str
    destination_account_id: str
    amount: int
    unit: str
    expires_in_seconds: int = 0
    description: str = ""


@dataclass(frozen=True, slots=True)
class ConfirmHold:
    """Confirm: post `amount` (0 = all) of the branch's hold, optionally split; release the rest."""

    branch: TccBranch
    amount: int = 0
    shares: tuple[Share, ...] = ()
    remainder_account_id: str = ""


@dataclass(frozen=True, slots=True)
class CancelHold:
    """Cancel: release the branch's hold (or record the Cancel if no Try ever arrived)."""

    branch: TccBranch
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CreateHolds:
    """Try for many branches in one local transaction, in the given order, each with its own
    outcome (the one its ReserveHold would have had; a refused hold fails alone)."""

    holds: tuple[ReserveHold, ...]


@dataclass(frozen=True, slots=True)
class ResolveHolds:
    """Confirm or Cancel many holds in one local transaction, in the given order, each with its
    own outcome (the one its ConfirmHold or CancelHold would have had). None: an item that asked
    for neither (refused alone)."""

    resolutions: tuple[ConfirmHold | CancelHold | None, ...]


@dataclass(frozen=True, slots=True)
class GetAccount:
    account_id: str


@dataclass(frozen=True, slots=True)
class ListAccounts:
    owner_id: str
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class GetTransfer:
    transfer_id: str


@dataclass(frozen=True, slots=True)
class ListEntries:
    account_id: str
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class GetHold:
    branch: TccBranch


@dataclass(frozen=True, slots=True)
class ReleaseExpiredHolds:
    """Release up to `batch_size` pending holds whose expiry has passed (the expiry worker)."""

    batch_size: int = 100


@dataclass(frozen=True, slots=True)
class AuditLedger:
    """Check the ledger's invariants: at most `limit` findings per kind."""

    limit: int = 100
    hold_grace_seconds: int = 300
    # Only transfers with an entry created since then are zero-sum checked (None: every one).
    changed_since: datetime | None = None


# --- reads for users and admins (ESC-11) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetWalletSummary:
    """A user's wallet: their USER accounts with balances."""

    owner_id: str


@dataclass(frozen=True, slots=True)
class ListWalletTransactions:
    """A user's history across their USER accounts, newest first; `unit` empty: every unit."""

    owner_id: str
    unit: str = ""
    since: datetime | None = None
    until: datetime | None = None
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class GetCommissionEarnings:
    """What platform revenue earned in [since, until), per period and unit, net of debits."""

    since: datetime | None
    until: datetime | None
    period: Period = Period.DAY


@dataclass(frozen=True, slots=True)
class ListBalances:
    """Every account with its balance; empty filters: no restriction."""

    kind: AccountKind | None = None
    unit: str = ""
    owner_id: str = ""
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class ListTransactions:
    """Every entry, newest first; empty filters: no restriction."""

    owner_id: str = ""
    unit: str = ""
    kind: AccountKind | None = None
    since: datetime | None = None
    until: datetime | None = None
    page_size: int = 0
    page_token: str = ""
