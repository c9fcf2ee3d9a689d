"""Counting the Python functions a piece of code enters (issue 13): a per-call floor pinned by
tests in Python calls, which the machine's load does not move, as round trips pin the database's
(pg_round_trips)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


@contextmanager
def entered() -> Iterator[Counter[tuple[str, str]]]:
    """The Python functions entered (or resumed: a coroutine's frame each time it goes on)
    meanwhile, in this thread, by (the folder of their file, their name)."""
    seen: Counter[tuple[str, str]] = Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            where = code.co_filename.rsplit("/", 2)  # (its folder: "<string>" has none)
            seen[(where[-2] if len(where) > 1 else where[0], code.co_name)] += 1

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(None)


def of_package(seen: Counter[tuple[str, str]], folder: str) -> list[str]:
    """The names of the functions entered in `folder` (e.g. "hirepay_platform"), each as often
    as it was."""
    return [name for (where, name), n in seen.items() if where == folder for _ in range(n)]


@contextmanager
def entered_by_package(*packages: str) -> Iterator[Counter[str]]:
    """The Python functions entered (or resumed) meanwhile, in this thread, counted by the first
    of `packages` (a directory anywhere in the function's file's path: "sqlalchemy", "asyncpg",
    "hirepay_platform") it belongs to; functions of none of them are not counted. Unlike
    entered()'s last folder, a package's subfolders count as the package (SQLAlchemy's pool,
    event, util, dialects...), and asyncio's own folder is not SQLAlchemy's ext/asyncio."""
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

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(None)
