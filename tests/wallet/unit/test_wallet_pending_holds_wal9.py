"""The process's memory of reserved holds (`PendingHolds`, issue 13): a recalled hold is a copy
with every field of the hold remembered, so resolving it (a Confirm planned on it) changes neither
the memory nor the hold that was remembered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hirepay_platform.tcc import TccBranch
from wallet.adapters.repositories.holds import PendingHolds
from wallet.domain.holds import Hold, HoldState


def _hold(n: int) -> Hold:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return Hold(
        branch=TccBranch(f"saga-{n}", "payment"),
        account_id="a" * 8,
        destination_account_id="b" * 8,
        unit="USD",
        amount=100 + n,
        expires_at=now + timedelta(minutes=15),
        created_at=now,
        description=f"hold {n}",
    )


def test_a_recalled_hold_is_an_equal_copy_with_its_version():
    memory = PendingHolds()
    held = [_hold(1), _hold(2)]
    memory.remember(held, 4242)
    for hold in held:
        recalled = memory.recall(hold.branch)
        assert recalled is not None
        copy, version = recalled
        assert copy == hold and copy is not hold and version == 4242


def test_resolving_a_recalled_hold_changes_neither_the_memory_nor_the_original():
    memory = PendingHolds()
    hold = _hold(1)
    memory.remember([hold], 7)
    copy, _ = memory.recall(hold.branch) or (None, 0)
    assert copy is not None
    copy.confirm(0, copy.created_at)
    assert copy.state is HoldState.CONFIRMED
    again, _ = memory.recall(hold.branch) or (None, 0)
    assert again is not None and again.state is HoldState.PENDING and again.transfer_id is None
    assert hold.state is HoldState.PENDING
    memory.forget([hold.branch])
    assert memory.recall(hold.branch) is None


def test_the_memory_is_bounded():
    memory = PendingHolds(max_entries=3)
    memory.remember([_hold(1), _hold(2)], 1)
    memory.remember([_hold(3), _hold(4)], 2)  # over the bound: forgets what it had
    assert memory.recall(_hold(1).branch) is None
    assert memory.recall(_hold(4).branch) is not None
