"""Counting the Python functions a piece of code enters (issue 13): a per-call floor pinned by
tests in Python calls, which the machine's load does not move, as round trips pin the database's
(pg_round_trips).

Every count is taken with the garbage collector held off (`collector_held_off`): a collection
started inside the window would run the finalizers (`__del__`, weakref callbacks) of garbage
other tests left (sockets, transports, processes...), and the profiler would count their calls as
the measured code's. `profiled()` (cProfile), `hooked()` (a profile function of one's own) and
`entered()` (the functions entered, by folder and name) are the ways to count Python calls, and
`greenlet_switches()` the way to count greenlet switches (a collected greenlet left suspended is
thrown into and switched out of)."""

from __future__ import annotations

import cProfile
import gc
import pstats
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

import greenlet

ProfileHook = Callable[[FrameType, str, Any], object]


@contextmanager
def collector_held_off() -> Iterator[None]:
    """Garbage collected now, then no collection until the block ends (the collector's previous
    state restored, even on an error): no finalizer of earlier garbage runs meanwhile."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Window(cProfile.Profile):
    """A profile whose stats leave out the frame that closed its window (`profiled.__exit__`),
    so they are those of `enable(); code; disable()` (the profiler's disable() included)."""

    def snapshot_stats(self) -> None:
        super().snapshot_stats()
        stats: dict[Any, Any] = self.stats  # type: ignore[attr-defined]
        closing = _label(profiled.__exit__)
        stats.pop(closing, None)
        for entry in stats.values():
            entry[4].pop(closing, None)  # (as a caller: of disable())


def _label(function: Callable[..., object]) -> tuple[str, int, str]:
    code = function.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


class profiled:  # (named as the function it is used as: `with profiled() as profile:`)
    """`with profiled() as profile:` - a cProfile.Profile of the block, taken with the garbage
    collector held off (see `collector_held_off`). Code awaited inside the block is measured as
    it would be between `profile.enable()` and `profile.disable()`."""

    __slots__ = ("_enabled", "profile")

    def __init__(self) -> None:
        self.profile: cProfile.Profile = _Window()
        self._enabled = False

    def __enter__(self) -> cProfile.Profile:
        self._enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        self.profile.enable()
        return self.profile

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.profile.disable()
        if self._enabled:
            gc.enable()


def calls_made(make: Callable[[], object]) -> int:
    """Python and built-in calls `make()` makes (cProfile's count; the profiler's own disable()
    not counted)."""
    with profiled() as profile:
        make()
    return pstats.Stats(profile).total_calls - 1  # type: ignore[attr-defined]


def names_called(make: Callable[[], object]) -> set[str]:
    """The names of the functions (Python and built-in) `make()` called."""
    with profiled() as profile:
        make()
    return {name for (_, _, name) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]


@contextmanager
def hooked(hook: ProfileHook) -> Iterator[None]:
    """`hook` as this thread's profile function (sys.setprofile) meanwhile, with the garbage
    collector held off."""
    with collector_held_off():
        sys.setprofile(hook)
        try:
            yield
        finally:
            sys.setprofile(None)


@contextmanager
def entered() -> Iterator[Counter[tuple[str, str]]]:
    """The Python functions entered (or resumed: a coroutine's frame each time it goes on)
    meanwhile, in this thread, by (the folder of their file, their name); the garbage collector
    held off."""
    seen: Counter[tuple[str, str]] = Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            where = code.co_filename.rsplit("/", 2)  # (its folder: "<string>" has none)
            seen[(where[-2] if len(where) > 1 else where[0], code.co_name)] += 1

    with collector_held_off():
        sys.setprofile(profile)
        try:
            yield seen
        finally:
            sys.setprofile(None)


@contextmanager
def greenlet_switches() -> Iterator[list[str]]:
    """Every greenlet switch in this thread meanwhile, by event ("switch", "throw"), with the
    garbage collector held off (SQLAlchemy's bridge switches into a new greenlet and back for
    each sync call it runs: its Connection's statements, the pool's checkout and checkin)."""
    seen: list[str] = []

    def trace(event: str, args: Any) -> None:
        seen.append(event)

    with collector_held_off():
        previous = greenlet.settrace(trace)
        try:
            yield seen
        finally:
            greenlet.settrace(previous)


def of_package(seen: Counter[tuple[str, str]], folder: str) -> list[str]:
    """The names of the functions entered in `folder` (e.g. "hirepay_platform"), each as often
    as it was."""
    return [name for (where, name), n in seen.items() if where == folder for _ in range(n)]


@contextmanager
def entered_by_package(*packages: str) -> Iterator[Counter[str]]:
    """The Python functions entered (or resumed) meanwhile, in this thread, counted by the first
    of `packages` (a directory anywhere in the function's file's path: "sqlalchemy", "asyncpg",
    "hirepay_platform") it belongs to; functions of none of them are not counted; the garbage
    collector held off. Unlike entered()'s last folder, a package's subfolders count as the
    package (SQLAlchemy's pool, event, util, dialects...), and asyncio's own folder is not
    SQLAlchemy's ext/asyncio."""
    seen: Counter[str] = Counter()
    package_of: dict[str, str | None] = {}  # by file: its package, or None

    def package(file: str) -> str | None:
        parts = file.replace("\\", "/").split("/")
        return next((p for p in packages if p in parts), None)

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            file = frame.f_code.co_filename
            where = package_of.get(file, "")
            if where == "":
                where = package_of[file] = package(file)
            if where is not None:
                seen[where] += 1

    with hooked(profile):
        yield seen
