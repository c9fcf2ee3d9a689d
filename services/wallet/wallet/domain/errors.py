"""The wallet's domain errors: each carries its kind and the stable reason named in the contract.

A reused idempotency key (transfer id or branch) is the platform's IdempotencyMismatch
(`hirepay_platform.tcc`, reason IDEMPOTENCY_MISMATCH); shared reasons come from FailureReason.
"""

from __future__ import annotations

from hirepay_platform.errors import (
    Conflict,
    ErrorKind,
    HirepayError,
    NotFound,
    PreconditionFailed,
    ValidationError,
)
from hirepay_platform.reasons import FailureReason

__all__ = [
    "AccountNotFound",
    "Conflict",
    "HoldAlreadyResolved",
    "HoldCancelled",
    "HoldExpired",
    "HoldNotFound",
    "InsufficientFunds",
    "TransferNotFound",
    "UnitMismatch",
    "ValidationError",
    "WalletError",
    "invalid",
]

# Every wallet error is a HirepayError; the alias keeps the service's own vocabulary.
WalletError = HirepayError


class AccountNotFound(NotFound):
    """An account named in the request does not exist."""

    reason = "ACCOUNT_NOT_FOUND"

    def __init__(self, account_id: str, *, field: str = "account_id") -> None:
        super().__init__(
            f"account {account_id} not found", metadata={"account_id": account_id, "field": field}
        )


class TransferNotFound(NotFound):
    """No transfer has this id."""

    reason = "TRANSFER_NOT_FOUND"

    def __init__(self, transfer_id: str) -> None:
        super().__init__(f"transfer {transfer_id} not found", metadata={"transfer_id": transfer_id})


class HoldNotFound(NotFound):
    """No hold exists for this branch (and no Cancel was recorded for it either)."""

    reason = "HOLD_NOT_FOUND"

    def __init__(self, global_tx_id: str, branch_id: str) -> None:
        super().__init__(
            f"no hold for branch {global_tx_id}/{branch_id}",
            metadata={"global_tx_id": global_tx_id, "branch_id": branch_id},
        )


class InsufficientFunds(PreconditionFailed):
    """A debit or reservation would take a non-negative account below zero."""

    reason = FailureReason.INSUFFICIENT_FUNDS

    def __init__(self, account_id: str) -> None:
        super().__init__(
            f"insufficient funds on account {account_id}", metadata={"account_id": account_id}
        )


class HoldAlreadyResolved(PreconditionFailed):
    """The hold was already confirmed, cancelled or expired; a hold resolves once."""

    reason = "HOLD_ALREADY_RESOLVED"

    def __init__(self, global_tx_id: str, branch_id: str, state: str) -> None:
        super().__init__(
            f"hold {global_tx_id}/{branch_id} is already {state}",
            metadata={"global_tx_id": global_tx_id, "branch_id": branch_id, "state": state},
        )


class HoldCancelled(PreconditionFailed):
    """The branch was cancelled before any Try reached the wallet: a late Try reserves nothing."""

    reason = FailureReason.HOLD_CANCELLED

    def __init__(self, global_tx_id: str, branch_id: str) -> None:
        super().__init__(
            f"branch {global_tx_id}/{branch_id} was cancelled before it was reserved",
            metadata={"global_tx_id": global_tx_id, "branch_id": branch_id},
        )


class HoldExpired(PreconditionFailed):
    """The hold is still pending but its expiry has passed; the expiry worker will release it."""

    reason = "HOLD_EXPIRED"

    def __init__(self, global_tx_id: str, branch_id: str) -> None:
        super().__init__(
            f"hold {global_tx_id}/{branch_id} has expired",
            metadata={"global_tx_id": global_tx_id, "branch_id": branch_id},
        )


class UnitMismatch(HirepayError):
    """An amount's unit differs from an account's unit (money never changes unit in a transfer)."""

    kind = ErrorKind.INVALID_ARGUMENT
    reason = "UNIT_MISMATCH"

    def __init__(self, field: str, expected: str, got: str) -> None:
        super().__init__(
            f"{field}: unit {got} does not match the account's unit {expected}",
            metadata={"field": field, "expected": expected, "got": got},
        )


def invalid(field: str, problem: str) -> ValidationError:
    """A VALIDATION_FAILED error naming one field."""
    return ValidationError(f"{field}: {problem}", fields={field: problem})
