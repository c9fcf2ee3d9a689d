"""Calls into blocking provider SDKs (PayPal's, Razorpay's): on a bounded thread pool, never on the
event loop, each with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class BlockingCalls:
    """A bounded pool for synchronous SDK calls; `run` awaits one with the provider deadline.

    A call that outlives its deadline keeps its thread until the SDK's own timeout ends it, so
    the SDKs are configured with the same timeout and the pool bounds how many can pile up."""

    def __init__(self, max_workers: int, timeout: float) -> None:
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="provider-sdk")

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._pool, fn), self.timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
