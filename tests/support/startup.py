"""Start independent processes of a test stack at once.

A process spends its start-up importing (CPU) and waiting for its readiness probe; the test run is
serial on a 2-core machine, so starting the sandbox and a service that do not depend on each other
side by side roughly halves the stack's start-up. Everything that did start is registered for
stopping before the first failure, if any, is raised: a failed start-up leaves nothing running.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def start_together(
    cleanup: contextlib.ExitStack,
    *starts: tuple[Callable[[], Any], Callable[[Any], None]],
) -> list[Any]:
    """Run each (start, stop) pair's start at once; return their results in order.

    `stop(result)` is registered on `cleanup` for every start that succeeded, in order, so
    the ExitStack stops them in reverse order as if they had been started one after another."""
    with ThreadPoolExecutor(max_workers=len(starts)) as pool:
        futures = [pool.submit(start) for start, _ in starts]
    results: list[Any] = []
    failure: BaseException | None = None
    for future, (_, stop) in zip(futures, starts, strict=True):
        try:
            result = future.result()
        except BaseException as exc:  # the others may have started: still registered below
            failure = failure or exc
            results.append(None)
            continue
        cleanup.callback(stop, result)
        results.append(result)
    if failure is not None:
        raise failure
    return results
