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
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from hirepay_platform.errors import AlreadyExists, Conflict, HirepayError, ValidationError
from hirepay_platform.fingerprint import Fingerprint, first_mismatch

# 1-128 characters; ":" and "/" are left out so that keys built from a branch stay unambiguous.
_BRANCH_ID = re.compile(r"[A-Za-z0-9._@-]{1,128}")


class TccOp(enum.StrEnum):
    """The three operations of a branch, each recorded once in the barrier table."""

    TRY = "try"
    CONFIRM = "confirm"
    CANCEL = "cancel"


class TccBranch(NamedTuple):
    """One participant branch of a global (saga) transaction.

    A named tuple, so that it is hashed and compared in C: branches key the sets and dicts of
    every grouped TCC call (barrier rows entered, holds planned and remembered), and a frozen
    dataclass's generated `__hash__` and `__eq__` were a Python call each, about 16 per wallet
    Reserve + Confirm pair (issue 13). Immutable, equal by value, ordered by its two ids."""

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

    async def insert_many(
        self,
        branches: Sequence[TccBranch],
        op: TccOp,
        origin: TccOp,
        fingerprints: Sequence[Fingerprint],
    ) -> set[TccBranch]:
        """`insert` for distinct branches at once (one round trip): the branches inserted."""
        ...

    async def release(self, branches: Collection[TccBranch], op: TccOp) -> None:
        """Delete rows this transaction inserted for calls of a group that were then refused, so
        the refusal leaves nothing behind, as the rollback of a call on its own would."""
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


async def _enter_many(
    barriers: BarrierRepository,
    op: TccOp,
    calls: Sequence[tuple[TccBranch, Fingerprint]],
    inserted: Collection[TccBranch] | None,
) -> list[BarrierRecord | HirepayError | None]:
    """Insert-first for a group of distinct branches: None where inserted (the call is first),
    else the existing row (or the call's own error when a twin is still being written).
    `inserted`: the rows were already inserted, by the participant's own statement (see
    hirepay_platform.barrier.insert_many_sql), and these are the branches it inserted."""
    if inserted is None:
        inserted = await barriers.insert_many(
            [branch for branch, _ in calls], op, op, [print_ for _, print_ in calls]
        )
    found: list[BarrierRecord | HirepayError | None] = []
    for branch, _ in calls:
        if branch in inserted:
            found.append(None)
            continue
        try:
            found.append(await _existing(barriers, branch, op))
        except HirepayError as exc:
            found.append(exc)
    return found


async def enter_try_many(
    barriers: BarrierRepository,
    calls: Sequence[tuple[TccBranch, Fingerprint]],
    inserted: Collection[TccBranch] | None = None,
) -> list[TryGate | HirepayError]:
    """`enter_try` for a group of Try calls of distinct branches in one transaction (one insert
    for all): each call's gate, or its own error; one call's error never touches the others."""
    gates: list[TryGate | HirepayError] = []
    for (branch, print_), record in zip(
        calls, await _enter_many(barriers, TccOp.TRY, calls, inserted), strict=True
    ):
        if record is None:
            gates.append(TryGate.FIRST)
        elif isinstance(record, HirepayError):
            gates.append(record)
        elif record.origin is TccOp.CANCEL:
            gates.append(TryGate.CANCELLED)
        else:
            gates.append(_replay_or_error(record, print_, branch, TryGate.REPLAY))
    return gates


async def enter_confirm_many(
    barriers: BarrierRepository,
    calls: Sequence[tuple[TccBranch, Fingerprint]],
    inserted: Collection[TccBranch] | None = None,
) -> list[ConfirmGate | HirepayError]:
    """`enter_confirm` for a group of Confirm calls of distinct branches in one transaction."""
    gates: list[ConfirmGate | HirepayError] = []
    records = await _enter_many(barriers, TccOp.CONFIRM, calls, inserted)
    for (branch, print_), record in zip(calls, records, strict=True):
        if record is None:
            gates.append(ConfirmGate.FIRST)
        elif isinstance(record, HirepayError):
            gates.append(record)
        else:
            gates.append(_replay_or_error(record, print_, branch, ConfirmGate.REPLAY))
    return gates


G = TypeVar("G", TryGate, ConfirmGate)


def _replay_or_error(
    record: BarrierRecord, print_: Fingerprint, branch: TccBranch, replay: G
) -> G | HirepayError:
    try:
        check_replay(record.fingerprint, print_, f"branch {branch}")
    except HirepayError as exc:
        return exc
    return replay


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
