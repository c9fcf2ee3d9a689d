"""The wallet process settles its garbage collector before serving (issue 13)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from wallet.entrypoints.main import GC_YOUNG_THRESHOLD, settle_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_collections_rarer() -> None:
    gc.unfreeze()
    _, middle, old = gc.get_threshold()
    settle_gc()
    assert gc.get_freeze_count() > 0  # what start-up built is out of the collector's sight
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)
    assert GC_YOUNG_THRESHOLD > 700  # rarer than Python's default
    # Collection still works: a cycle made afterwards is found.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
