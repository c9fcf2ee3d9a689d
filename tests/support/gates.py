"""Gates that hold an async call where a test wants it, so tests order tasks by events, not sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class Gate:
    """Holds wrapped calls: `entered()` returns once a call is held, `release()` lets them all go.

    Wrapping a fake's method with `hold` replaces "sleep a little so the first request is inside"
    with waiting for the proof that it is.
    """

    def __init__(self) -> None:
        self._entered = asyncio.Event()
        self._released = asyncio.Event()

    def hold(
        self, call: Callable[..., Awaitable[Any]], *, after: bool = False
    ) -> Callable[..., Awaitable[Any]]:
        """`call` held before it runs (or, with `after`, once it has run and before it answers)."""

        async def held(*args: Any, **kwargs: Any) -> Any:
            if after:
                result = await call(*args, **kwargs)
                await self._wait_released()
                return result
            await self._wait_released()
            return await call(*args, **kwargs)

        return held

    async def _wait_released(self) -> None:
        self._entered.set()
        await self._released.wait()

    async def entered(self, timeout: float = 10.0) -> None:
        """Return once a held call is inside the gate."""
        await asyncio.wait_for(self._entered.wait(), timeout)

    def release(self) -> None:
        self._released.set()
