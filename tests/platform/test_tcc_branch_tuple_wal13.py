"""A TCC branch is hashed and compared without a Python call (issue 13: branches key the sets and
dicts of every grouped TCC call, ~16 look-ups per wallet Reserve + Confirm pair, each a generated
dataclass method call before), and is still the value it was: immutable, equal and hashed by its
two ids, ordered by them, validated, printed and keyed as before (the barrier's idempotency per
branch and operation rests on it: PAY-8, ESC-2)."""

from __future__ import annotations

import pstats

import pytest

from hirepay_platform.errors import ValidationError
from hirepay_platform.tcc import TccBranch
from tests.support.python_calls import profiled


def test_hashing_and_comparing_branches_make_no_python_call():
    branches = [TccBranch(f"g-{i}", "payment") for i in range(50)]
    twins = [TccBranch(b.global_tx_id, b.branch_id) for b in branches]
    with profiled() as profile:
        seen = set(branches)
        found = [t in seen for t in twins]
        keyed = {b: i for i, b in enumerate(branches)}
        looked_up = [keyed[t] for t in twins]
    assert all(found) and looked_up == list(range(50))
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    # Python frames other than this test's own comprehensions ("~": built-ins)
    python_frames = [label for label in stats if label[0] not in ("~", __file__)]
    assert python_frames == []


def test_a_branch_is_the_same_value_as_before():
    branch = TccBranch("saga-1", "payment")
    assert branch == TccBranch("saga-1", "payment")
    assert hash(branch) == hash(TccBranch("saga-1", "payment"))
    assert branch != TccBranch("saga-1", "fee") and branch != TccBranch("saga-2", "payment")
    assert len({branch, TccBranch("saga-1", "payment"), TccBranch("saga-1", "fee")}) == 2
    assert (branch.global_tx_id, branch.branch_id) == ("saga-1", "payment")
    assert TccBranch(global_tx_id="saga-1", branch_id="payment") == branch
    assert sorted([TccBranch("b", "x"), TccBranch("a", "y"), TccBranch("a", "x")]) == [
        TccBranch("a", "x"),
        TccBranch("a", "y"),
        TccBranch("b", "x"),
    ]
    assert str(branch) == "saga-1/payment"
    assert branch.key("capture") == "saga-1:payment:capture"
    assert repr(branch) == "TccBranch(global_tx_id='saga-1', branch_id='payment')"
    assert branch.validated() is branch
    with pytest.raises(AttributeError):
        branch.branch_id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        TccBranch("saga:1", "payment").validated()
    with pytest.raises(ValidationError):
        TccBranch("saga-1", "").validated()
