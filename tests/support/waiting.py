"""The one way tests wait for something: poll a positive condition until it holds or time runs out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

# The first pause is an eighth of the caller's `interval`, then it doubles up to `interval`: a
# condition that holds shortly after the first poll is seen then, not a whole interval later,
# while a long wait polls only three times more than it did with a fixed interval.
FIRST_PAUSE_FRACTION = 1 / 8


def pauses(interval: float) -> Iterator[float]:
    """The pauses between polls: interval/8, /4, /2, then `interval` for good."""
    pause = interval * FIRST_PAUSE_FRACTION
    while True:
        yield pause
        pause = min(pause * 2, interval)


def eventually(
    check: Callable[[], Any], timeout: float = 30.0, what: str = "", *, interval: float = 0.2
) -> Any:
    """Poll `check` until it returns a truthy value (returned), else raise its last AssertionError.

    The generous default timeout only bounds a failing test: a passing one returns as soon as the
    condition holds, also on a loaded machine.
    """
    deadline = time.monotonic() + timeout
    schedule = pauses(interval)
    while True:
        try:
            result = check()
            if result:
                return result
            last: BaseException = AssertionError(
                f"not reached in {timeout}s: {what or 'condition'} (last: {result!r})"
            )
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise last
        time.sleep(next(schedule))


async def wait_for(
    probe: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, interval: float = 0.1
) -> Any:
    """Poll an async probe until it returns something truthy (returned); the timeout, as
    `eventually`'s, only bounds a failing test."""
    deadline = time.monotonic() + timeout
    schedule = pauses(interval)
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(next(schedule))
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
