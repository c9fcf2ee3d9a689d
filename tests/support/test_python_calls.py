"""The call counts of tests/support/python_calls are the measured code's alone: garbage earlier
code left with finalizers (`__del__`, weakref callbacks) is collected before a window opens, not
inside it, where the profiler would count the finalizers' calls (a counted test failed in CI so:
15 calls for 11)."""

from __future__ import annotations

import gc
import pstats
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import greenlet
import pytest

from tests.support.python_calls import calls_made, entered, greenlet_switches, hooked, profiled

GARBAGE = 50
ALLOCATED = 200


class _Cyclic:
    """Garbage only the collector frees (it refers to itself), whose finalizer makes calls, and
    which holds a greenlet left suspended (collected: thrown into, and switched out of)."""

    def __init__(self) -> None:
        self.me = self
        self.suspended = greenlet.greenlet(lambda: greenlet.getcurrent().parent.switch())
        self.suspended.switch()

    def __del__(self) -> None:
        len(str(abs(-1)))


def _small() -> None:
    """A few calls, and ALLOCATED objects kept: a collection starts in the middle."""
    kept: list[list[int]] = []
    for i in range(ALLOCATED):
        kept.append([i])


@contextmanager
def _garbage_queued() -> Iterator[None]:
    """GARBAGE cyclic objects left uncollected, and a collection due after ALLOCATED / 2 more
    objects (more than opening a window makes, fewer than _small)."""
    threshold = gc.get_threshold()
    enabled = gc.isenabled()
    gc.collect()
    gc.enable()
    gc.set_threshold(100_000)
    for _ in range(GARBAGE):
        _Cyclic()
    gc.set_threshold(gc.get_count()[0] + ALLOCATED // 2)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.collect()
        if not enabled:
            gc.disable()


def test_a_count_with_garbage_queued_is_the_quiet_count() -> None:
    quiet = calls_made(_small)
    assert quiet == 1 + ALLOCATED  # _small and its appends
    with _garbage_queued(), profiled() as profile:
        _small()
    stats = pstats.Stats(profile)
    names = {name for (_, _, name) in stats.stats}  # type: ignore[attr-defined]
    assert "__del__" not in names, names
    assert stats.total_calls - 1 == quiet  # type: ignore[attr-defined]  # (disable())


def test_entered_and_a_hook_see_no_finalizer() -> None:
    with _garbage_queued(), entered() as seen:
        _small()
    assert "__del__" not in {name for (_, name) in seen}, seen
    called: list[str] = []

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            called.append(frame.f_code.co_name)

    with _garbage_queued(), hooked(hook):
        _small()
    assert "__del__" not in called, called


def test_greenlet_switches_see_none_of_a_collected_greenlet() -> None:
    with _garbage_queued(), greenlet_switches() as switches:
        _small()
    assert switches == []


def test_the_window_is_that_of_enable_and_disable() -> None:
    """No frame of the window's own is counted: only the code's and the profiler's disable()."""
    with profiled() as profile:
        abs(-1)
    labels = sorted(name for (_, _, name) in pstats.Stats(profile).stats)  # type: ignore[attr-defined]
    assert labels == [
        "<built-in method builtins.abs>",
        "<method 'disable' of '_lsprof.Profiler' objects>",
    ]


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize(
    "window",
    [profiled, entered, lambda: hooked(lambda *_: None), greenlet_switches],
    ids=["profiled", "entered", "hooked", "greenlet_switches"],
)
def test_the_collectors_state_is_restored_even_on_an_error(
    enabled: bool, window: Callable[[], AbstractContextManager[object]]
) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(ZeroDivisionError), window():
            assert not gc.isenabled()
            1 / 0  # noqa: B018
        assert gc.isenabled() is enabled
        assert sys.getprofile() is None
    finally:
        (gc.enable if was else gc.disable)()
