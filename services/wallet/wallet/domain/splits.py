"""Fee splits: divide an amount by basis points so the parts always sum to the whole.

The rule is explicit: each share gets floor(total * basis_points / 10000) and what flooring leaves
over (always fewer minor units than there are shares) goes to one named account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hirepay_platform import money
from wallet.domain.errors import invalid

WHOLE_BP = 10_000


@dataclass(frozen=True, slots=True)
class Share:
    """One part of a split: an account and its share in basis points (1 bp = 0.01%)."""

    account_id: str
    basis_points: int


@dataclass(frozen=True, slots=True)
class Part:
    """What one account receives from a split."""

    account_id: str
    amount: int


def validate_shares(shares: Sequence[Share], remainder_account_id: str) -> None:
    """Shares must name distinct accounts, be positive, add up to 10000 bp, and the remainder
    account must be one of them."""
    if not shares:
        raise invalid("shares", "at least one share is required")
    if len(shares) > 20:
        raise invalid("shares", "at most 20 shares")
    seen: set[str] = set()
    for i, share in enumerate(shares):
        if not 0 < share.basis_points <= WHOLE_BP:
            raise invalid(f"shares[{i}].basis_points", "must be between 1 and 10000")
        if share.account_id in seen:
            raise invalid(f"shares[{i}].to_account_id", "appears in more than one share")
        seen.add(share.account_id)
    if sum(share.basis_points for share in shares) != WHOLE_BP:
        raise invalid("shares", "basis points must add up to 10000")
    if remainder_account_id not in seen:
        raise invalid("remainder_account_id", "must be one of the shares' accounts")


def split_amount(total: int, shares: Sequence[Share], remainder_account_id: str) -> list[Part]:
    """One part per share, in the shares' order; the remainder is added to its named account.

    Parts may be zero (a tiny total split many ways); callers drop zero parts from the entries.
    """
    money.validate_amount(total, field="total.amount_minor")
    validate_shares(shares, remainder_account_id)
    amounts = [total * share.basis_points // WHOLE_BP for share in shares]
    remainder = total - sum(amounts)
    parts = []
    for share, amount in zip(shares, amounts, strict=True):
        if share.account_id == remainder_account_id:
            amount += remainder
        parts.append(Part(share.account_id, amount))
    return parts
