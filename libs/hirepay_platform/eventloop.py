"""The event loop every Hirepay process runs on: uvloop (libuv, in C) where installed, else
asyncio's own. Each gRPC call and HTTP request is a handful of loop turns (callbacks, task steps,
socket reads and writes); uvloop runs them at a fraction of the pure-Python selector loop's CPU
(issue 13). Nothing in Hirepay depends on which loop runs it: grpc.aio drives its completion
queue through the running loop's public API, and uvicorn picks uvloop by itself when present."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# "default": uvloop when it can be imported, asyncio's loop otherwise; "asyncio" forces the
# standard loop (a comparison, or a platform uvloop does not support); "uvloop" requires it.
LOOPS = ("default", "uvloop", "asyncio")


def run(main: Coroutine[Any, Any, T], *, loop: str = "default") -> T:
    """Run `main` to completion on a new event loop of kind `loop` (see LOOPS)."""
    if loop not in LOOPS:
        main.close()
        raise ValueError(f"loop must be one of {LOOPS}, not {loop!r}")
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def uses_uvloop() -> bool:
    """Whether the running loop is uvloop's (for logs and tests)."""
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")
