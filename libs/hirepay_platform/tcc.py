"""The one Try-Confirm-Cancel barrier, domain part: branches, operations and the gates each
participant handler passes through (standard library only).

Every participant guards its Try, Confirm and Cancel with a barrier row keyed by
(global_tx_id, branch_id, op), written insert-first in the same local transaction as the business
change. The gates below turn the outcome of that insert into the three TCC anomalies' answers:
a repeated call is a replay (its fingerprint must match), a Cancel before its Try is a null
compensation (recorded, succeeds, does nothing), and a Try after its Cancel is refused (hanging).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Protocol

from hirepay_platform.errors import AlreadyExists, Conflict, ValidationError
from hirepay_platform.fingerprint import Fingerprint, first_mismatch

# 1-128 characters; ":" and "/" are left out so that keys built from a branch stay unambiguous.
_BRANCH_ID = re.compile(r"[A-Za-z0-9._@-]{1,128}")


class TccOp(enum.StrEnum):
    """The three operations of a branch, each recorded once in the barrier table."""

    TRY = "try"
    CONFIRM = "confirm"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class TccBranch:
    """One participant branch of a global (saga) transaction."""

    global_tx_id: str
    branch_id: str

    def validated(self) -> TccBranch:
        """The branch itself, or a VALIDATION_FAILED naming the bad part."""
        for name, value in (("global_tx_id", self.global_tx_id), ("branch_id", self.branch_id)):
            if not _BRANCH_ID.fullmatch(value or ""):
                raise ValidationError(
                    f"branch.{name} is invalid",
                    fields={f"branch.{name}": "must be 1-128 characters of A-Z a-z 0-9 . _ @ -"},
                )
        return self

    def key(self, op: str) -> str:
        """An idempotency key for an operation on this branch (e.g. a provider call)."""
        return f"{self.global_tx_id}:{self.branch_id}:{op}"

    def __str__(self) -> str:
        return f"{self.global_tx_id}/{self.branch_id}"


@dataclass(frozen=True, slots=True)
class BarrierRecord:
    """One barrier row: which operation of a branch happened, and who wrote it."""

    branch: TccBranch
    op: TccOp
    # For a "try" row: TRY if a Try wrote it, CANCEL if a Cancel came first (null compensation).
    origin: TccOp
    fingerprint: Fingerprint = field(default_factory=dict)


class BarrierRepository(Protocol):
    """The barrier table of one participant (hirepay_platform.barrier implements it in SQL)."""

    async def insert(
        self, branch: TccBranch, op: TccOp, origin: TccOp, fingerprint: Fingerprint
    ) -> bool:
        """Insert-first on (global_tx_id, branch_id, op): True if inserted, False if it existed."""
        ...

    async def get(self, branch: TccBranch, op: TccOp) -> BarrierRecord | None: ...


class IdempotencyMismatch(AlreadyExists):
    """An idempotency key (request id or branch) was reused with a different request; metadata
    names the first field that differs."""

    reason = "IDEMPOTENCY_MISMATCH"

    def __init__(self, key: str, field: str) -> None:
        super().__init__(
            f"{key} was already used with a different {field}",
            metadata={"key": key, "field": field},
        )


def check_replay(stored: Fingerprint, current: Fingerprint, key: str) -> None:
    """Refuse a repeated request whose fingerprint differs from the first one's."""
    mismatch = first_mismatch(stored, current)
    if mismatch is not None:
        raise IdempotencyMismatch(key, mismatch)


class TryGate(enum.Enum):
    """What a Try may do after passing its barrier."""

    FIRST = "first"  # reserve now, in this transaction
    REPLAY = "replay"  # the same Try ran before: answer with what it did
    CANCELLED = "cancelled"  # its Cancel came first: a hanging Try, reserve nothing


class ConfirmGate(enum.Enum):
    FIRST = "first"
    REPLAY = "replay"


class CancelGate(enum.Enum):
    """What a Cancel may do after passing its barrier."""

    NULL_COMPENSATION = "null_compensation"  # no Try happened: recorded, nothing to release
    FIRST = "first"  # release what the Try reserved, in this transaction
    REPLAY = "replay"  # the Cancel ran before


async def _existing(barriers: BarrierRepository, branch: TccBranch, op: TccOp) -> BarrierRecord:
    record = await barriers.get(branch, op)
    if record is None:
        # The conflicting insert is by a transaction that has not committed (and then rolled back).
        raise Conflict(f"branch {branch} is being written; retry")
    return record


async def enter_try(barriers: BarrierRepository, branch: TccBranch, print_: Fingerprint) -> TryGate:
    """Pass a Try through the barrier; a replay with another request raises IdempotencyMismatch."""
    if await barriers.insert(branch, TccOp.TRY, TccOp.TRY, print_):
        return TryGate.FIRST
    record = await _existing(barriers, branch, TccOp.TRY)
    if record.origin is TccOp.CANCEL:
        return TryGate.CANCELLED
    check_replay(record.fingerprint, print_, f"branch {branch}")
    return TryGate.REPLAY


async def enter_confirm(
    barriers: BarrierRepository, branch: TccBranch, print_: Fingerprint
) -> ConfirmGate:
    """Pass a Confirm through the barrier; a replay with another request raises
    IdempotencyMismatch."""
    if await barriers.insert(branch, TccOp.CONFIRM, TccOp.CONFIRM, print_):
        return ConfirmGate.FIRST
    record = await _existing(barriers, branch, TccOp.CONFIRM)
    check_replay(record.fingerprint, print_, f"branch {branch}")
    return ConfirmGate.REPLAY


async def enter_cancel(barriers: BarrierRepository, branch: TccBranch) -> CancelGate:
    """Pass a Cancel through the barrier. A Cancel before its Try writes the Try's row itself
    (origin CANCEL), so that a late Try finds it and refuses to reserve."""
    if await barriers.insert(branch, TccOp.TRY, TccOp.CANCEL, {}):
        await barriers.insert(branch, TccOp.CANCEL, TccOp.CANCEL, {})
        return CancelGate.NULL_COMPENSATION
    if not await barriers.insert(branch, TccOp.CANCEL, TccOp.CANCEL, {}):
        return CancelGate.REPLAY
    return CancelGate.FIRST


async def cancelled_before_try(barriers: BarrierRepository, branch: TccBranch) -> bool:
    """Whether the branch's Try row was written by a Cancel (a null compensation happened)."""
    record = await barriers.get(branch, TccOp.TRY)
    return record is not None and record.origin is TccOp.CANCEL
