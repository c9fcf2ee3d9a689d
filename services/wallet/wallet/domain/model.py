"""The wallet's accounts: kinds, balances, balance shards, and the rules for client-given ids.

Plain Python: nothing here knows about SQL or gRPC. Entries and postings live in
`wallet.domain.ledger`, holds (the wallet's side of the two-phase handshake) in `wallet.domain.holds`.
"""

from __future__ import annotations

import enum
import re
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from wallet.domain.errors import AccountNotFound, invalid

# Balance rows per sharded account. Credits pick one shard by a hash of their transfer id, so
# concurrent fees into the one platform revenue account rarely wait for each other's row lock.
BALANCE_SHARDS = 16

# Transfer ids chosen by clients. No "/" so the ids the wallet derives from branches (see
# holds.confirm_transfer_id) can never collide with a client's own. Branch ids follow the platform's
# TccBranch rule (which also leaves out ":").
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
# An account id as the wallet writes it (str(uuid.UUID)): accepted as it is, one regex match
# instead of parsing a UUID and printing it again on every leg of every call (issue 13).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class AccountKind(enum.StrEnum):
    """What an account is for (mirrors the contract's AccountKind)."""

    USER = "user"
    PLATFORM_REVENUE = "platform_revenue"
    ESCROW = "escrow"
    PROVIDER_CLEARING = "provider_clearing"
    PAYOUTS = "payouts"
    ISSUANCE = "issuance"


# System accounts that many transactions credit at once; their balance lives in shard rows.
SHARDED_KINDS: frozenset[AccountKind] = frozenset(
    {
        AccountKind.PLATFORM_REVENUE,
        AccountKind.PROVIDER_CLEARING,
        AccountKind.ISSUANCE,
        AccountKind.PAYOUTS,
    }
)


def shard_count_for(kind: AccountKind, allow_negative: bool) -> int:
    """How many balance shards an account gets: none for ordinary wallets.

    Sharding pays off only where no balance check is needed on the hot path: accounts that may go
    negative, and credit-heavy system accounts (a rare debit of those takes the slow, locked path).
    """
    return BALANCE_SHARDS if allow_negative or kind in SHARDED_KINDS else 0


def shard_for(key: str, shards: int) -> int:
    """The shard a transfer touches on a sharded account: stable for one transfer id."""
    return zlib.crc32(key.encode()) % shards


# --- validation of identifiers ---------------------------------------------------------------


def validate_account_id(value: str, field: str = "account_id") -> str:
    """Account ids are UUIDs assigned by the wallet; anything else cannot name an account. Another
    spelling of a UUID (upper case, braces, no hyphens) names the account of its canonical form."""
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise invalid(field, "must be an account id (UUID)") from None


def validate_client_id(value: str, field: str) -> str:
    """A client-chosen id: 1-128 characters of letters, digits and . _ : @ -."""
    if not _CLIENT_ID.fullmatch(value or ""):
        raise invalid(field, "must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    return value


def validate_owner_id(value: str, field: str = "owner_id") -> str:
    """An owner: a user id as authenticated upstream (e.g. a JWT subject such as "auth0|42"), or
    "platform"; any 1-128 printable characters without spaces."""
    if not 0 < len(value) <= 128 or not value.isprintable() or any(ch.isspace() for ch in value):
        raise invalid(field, "must be 1-128 printable characters without spaces")
    return value


def validate_description(value: str, field: str = "description") -> str:
    if len(value) > 500:
        raise invalid(field, "must be at most 500 characters")
    return value


def validate_metadata(value: Mapping[str, str], field: str = "metadata") -> dict[str, str]:
    if len(value) > 50:
        raise invalid(field, "must have at most 50 keys")
    for key, item in value.items():
        if not key or len(key) > 64 or len(item) > 500:
            raise invalid(field, "keys must be 1-64 characters and values at most 500")
    return dict(value)


# --- accounts and balances -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountRef:
    """The attributes of an account that never change after it is opened."""

    id: str
    owner_id: str
    unit: str
    kind: AccountKind
    allow_negative: bool
    shards: int

    @property
    def sharded(self) -> bool:
        return self.shards > 0


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance: posted entries, pending (held) debits, and what may be spent."""

    posted: int
    pending: int

    @property
    def available(self) -> int:
        return self.posted - self.pending


@dataclass(frozen=True, slots=True)
class Account:
    """An account with its current balance."""

    ref: AccountRef
    balance: Balance
    created_at: datetime

    @property
    def id(self) -> str:
        return self.ref.id


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account about to be opened."""

    id: str
    owner_id: str
    unit: str
    kind: AccountKind
    allow_negative: bool

    @property
    def shards(self) -> int:
        return shard_count_for(self.kind, self.allow_negative)


def require_accounts(accounts: Mapping[str, AccountRef], wanted: Iterable[tuple[str, str]]) -> None:
    """Raise ACCOUNT_NOT_FOUND for the first (account id, field) that is not in `accounts`."""
    for account_id, field_name in wanted:
        if account_id not in accounts:
            raise AccountNotFound(account_id, field=field_name)
