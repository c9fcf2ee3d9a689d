"""Steps the wallet's use cases share: applying a posting under the no-overdraft rule, rebuilding a
transfer record, checking units and shares, reading page tokens.

Idempotency and the TCC guard are insert-first on unique keys inside the same transaction as the
money movement, never check-then-write: a twin request blocks on the key until the first commits or
rolls back, then either sees the stored outcome or proceeds as if it were first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from wallet.domain.errors import InsufficientFunds, UnitMismatch, invalid
from wallet.domain.ledger import Entry, Posting, TransferRecord
from wallet.domain.model import AccountRef, validate_account_id
from wallet.domain.splits import Share
from wallet.service_layer.ports import PostOutcome, TransferHeader, WalletUnitOfWork

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paginated listing; an empty token means the last page."""

    items: list[T]
    next_page_token: str


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


def transfer_record(
    header: TransferHeader, created_at: datetime, entries: Iterable[Entry]
) -> TransferRecord:
    """The record of a transfer just posted (the same shape a later read returns)."""
    return TransferRecord(
        id=header.id,
        description=header.description,
        metadata=dict(header.metadata),
        created_at=created_at,
        # Entries made by the posting statement carry it already (a replace per entry is slow).
        # (A list made in one call, not a generator resumed per entry; issue 13.)
        entries=tuple(
            [
                e
                if e.description == header.description
                else dataclasses.replace(e, description=header.description)
                for e in entries
            ]
        ),
    )


def check_unit(account: AccountRef, unit: str, field: str) -> None:
    """Money never changes unit: refuse an amount in another unit than the account's."""
    if account.unit != unit:
        raise UnitMismatch(field, account.unit, unit)


def validated_shares(shares: Iterable[Share]) -> tuple[Share, ...]:
    """Shares whose account ids are valid account ids (named by index when not)."""
    return tuple(
        Share(validate_account_id(s.account_id, f"shares[{i}].to_account_id"), s.basis_points)
        for i, s in enumerate(shares)
    )


def share_fields(shares: Iterable[Share]) -> list[list[object]]:
    """Shares as fingerprint material."""
    return [[s.account_id, s.basis_points] for s in shares]


def cursor_position(cursor: dict[str, object] | None, *, scope: str) -> int | None:
    """The keyset position in a page token, which must belong to the same listing."""
    if cursor is None:
        return None
    position = cursor.get("p")
    if cursor.get("s") != scope or not isinstance(position, int) or isinstance(position, bool):
        raise invalid("page_token", "does not belong to this listing")
    return position
