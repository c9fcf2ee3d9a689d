"""Counting the asyncio tasks a piece of code makes: a wait that runs in a task of its own costs a
task and its scheduling each time (issue 13), so the tests assert that none is made."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any


@contextlib.contextmanager
def tasks_made() -> Iterator[list[Coroutine[Any, Any, Any]]]:
    """The coroutines made into tasks on the running loop while the block runs (the loop's own
    task factory, if any, still makes them)."""
    loop = asyncio.get_running_loop()
    made: list[Coroutine[Any, Any, Any]] = []
    default_factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro, **kw):  # type: ignore[no-untyped-def]
        made.append(coro)
        if default_factory is not None:
            return default_factory(loop, coro, **kw)
        return asyncio.Task(coro, loop=loop, **kw)

    loop.set_task_factory(counting)
    try:
        yield made
    finally:
        loop.set_task_factory(default_factory)
