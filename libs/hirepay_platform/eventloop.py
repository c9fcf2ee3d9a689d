"""The event loop every Hirepay process runs on: uvloop (libuv, in C) where installed, else
asyncio's own. Each gRPC call and HTTP request is a handful of loop turns (callbacks, task steps,
socket reads and writes); uvloop runs them at a fraction of the pure-Python selector loop's CPU
(issue 13). Nothing in Hirepay depends on which loop runs it: grpc.aio drives its completion
queue through the running loop's public API, and uvicorn picks uvloop by itself when present.

Before serving, a process also settles its garbage collector (`settle_gc`)."""

from __future__ import annotations

import asyncio
import gc
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


# Tracked objects allocated (net) before a young-generation collection: ten times Python's 700.
# Under the wallet bench (c=32 transfers) a young collection cost ~0.3 CPU-ms and came every ~20
# calls, a full one (walking ~100,000 start-up objects) ~65 CPU-ms every few thousand: together
# 4-6% of the wallet's CPU per call; in payments under posting load GC was 2.4% of its CPU. With
# start-up frozen and this threshold it is ~0.003 CPU-ms per call (issue 13). Requests make few
# reference cycles (reference counting frees the rest): what they do make waits a few thousand
# allocations longer.
GC_YOUNG_THRESHOLD = 7000


def settle_gc() -> None:
    """Called once start-up is done, before serving. What start-up built (modules, protobuf
    descriptors, tables, compiled statements, SDK clients) lives as long as the process: frozen
    out of the collector's sight, so that a full collection walks only what calls made; and young
    collections ten times rarer (GC_YOUNG_THRESHOLD)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
