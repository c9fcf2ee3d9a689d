"""The one in-memory Try-Confirm-Cancel barrier table of the unit tests (insert-first, unique key)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from hirepay_platform.errors import StaleRow
from hirepay_platform.fingerprint import Fingerprint
from hirepay_platform.tcc import BarrierRecord, TccBranch, TccOp

# (global transaction id, branch id, operation): the unique key of the SQL barrier table.
BarrierKey = tuple[str, str, TccOp]
BarrierRows = dict[BarrierKey, BarrierRecord]


class MemoryBarriers:
    """The contract of hirepay_platform.barrier.SqlBarrierRepository over a dict.

    `rows` is the dict itself, or a function returning it when a fake unit of work swaps its
    working copy on every transaction.
    """

    def __init__(self, rows: BarrierRows | Callable[[], BarrierRows] | None = None) -> None:
        if rows is None:
            rows = {}
        self._rows = rows if callable(rows) else (lambda: rows)

    @property
    def rows(self) -> BarrierRows:
        return self._rows()

    async def insert(
        self,
        branch: TccBranch,
        op: TccOp,
        origin: TccOp,
        fingerprint: Mapping[str, str] | Fingerprint,
    ) -> bool:
        key = (branch.global_tx_id, branch.branch_id, op)
        if key in self.rows:
            return False
        self.rows[key] = BarrierRecord(branch, op, origin, dict(fingerprint))
        return True

    def insert_with_batch(
        self,
        branch: TccBranch,
        op: TccOp,
        origin: TccOp,
        fingerprint: Mapping[str, str],
        *,
        only_if: object = None,
    ) -> None:
        """Inserted now, committed with the rest; a row that exists already raises StaleRow (the
        real statement then writes nothing of the unit of work, and its commit raises it).
        `only_if` is the fake unit of work's to check at commit (a payment assumed)."""
        key = (branch.global_tx_id, branch.branch_id, op)
        if key in self.rows:
            raise StaleRow(f"barrier {key} exists")
        self.rows[key] = BarrierRecord(branch, op, origin, dict(fingerprint))

    async def insert_many(
        self,
        branches: Sequence[TccBranch],
        op: TccOp,
        origin: TccOp,
        fingerprints: Sequence[Fingerprint],
    ) -> set[TccBranch]:
        assert len(set(branches)) == len(branches), "a branch may appear once per call"
        return {
            branch
            for branch, print_ in zip(branches, fingerprints, strict=True)
            if await self.insert(branch, op, origin, print_)
        }

    async def release(self, branches: Collection[TccBranch], op: TccOp) -> None:
        for branch in branches:
            del self.rows[(branch.global_tx_id, branch.branch_id, op)]

    async def get(self, branch: TccBranch, op: TccOp) -> BarrierRecord | None:
        return self.rows.get((branch.global_tx_id, branch.branch_id, op))
