"""Readiness over time: dependency checks re-run periodically, flipping gRPC health and naming what is down.

A service registers one check per dependency (its database, for every service). The watcher runs
them every few seconds: when one fails the service reports NOT_SERVING (so load balancers and the
gateway's /readyz stop sending it traffic) and says which dependency is down in the health reply's
trailing metadata; when all pass again it reports SERVING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hirepay_platform import metrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
# Trailing metadata of a health Check: the dependencies that are down, comma-separated.
UNAVAILABLE_KEY = "hirepay-unavailable-dependencies"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DependencyHealthServicer(health.aio.HealthServicer):
    """The standard gRPC health service, plus the names of the dependencies that are down."""

    def __init__(self) -> None:
        super().__init__()
        self.unavailable: tuple[str, ...] = ()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext | None
    ) -> health_pb2.HealthCheckResponse | None:
        if context is not None and self.unavailable:
            context.set_trailing_metadata(((UNAVAILABLE_KEY, ",".join(self.unavailable)),))
        return await super().Check(request, context)


class ReadinessWatcher:
    """Runs every registered check each `interval` seconds and reports the outcome through
    `set_serving` (called only when the outcome changes) and the hirepay_dependency_up gauge."""

    def __init__(
        self,
        service: str,
        checks: dict[str, Check],
        set_serving: Callable[[tuple[str, ...]], Awaitable[None]],
        *,
        interval: float,
        timeout: float,
    ) -> None:
        self._service = service
        self._checks = checks
        self._set_serving = set_serving
        self._interval = interval
        self._timeout = timeout
        self.down: tuple[str, ...] = ()
        for name in checks:
            metrics.DEPENDENCY_UP.labels(service, name).set(1)

    async def _probe(self, name: str, check: Check) -> str | None:
        """The dependency's name if its check fails or hangs, else None."""
        try:
            await asyncio.wait_for(check(), self._timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure means "not ready"; say which and why
            if name not in self.down:
                log.warning("%s: dependency %s is unavailable: %s", self._service, name, exc)
            metrics.DEPENDENCY_UP.labels(self._service, name).set(0)
            return name
        metrics.DEPENDENCY_UP.labels(self._service, name).set(1)
        return None

    async def check_once(self) -> tuple[str, ...]:
        """Run every check now; report a change of readiness; return what is down."""
        results = await asyncio.gather(*(self._probe(n, c) for n, c in self._checks.items()))
        down = tuple(sorted(name for name in results if name))
        if down != self.down:
            if not down:
                log.info("%s: every dependency is back; serving", self._service)
            self.down = down
            await self._set_serving(down)
        return down

    async def run(self, stop: asyncio.Event) -> None:
        """Re-check until `stop` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
            if not stop.is_set():
                await self.check_once()


async def unavailable_dependencies(channel: grpc.aio.Channel, timeout: float) -> list[str]:
    """Ask a platform service which of its dependencies are down (empty if none, or unknown)."""
    call = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=timeout
    )
    try:
        await call
        trailing = await call.trailing_metadata()
    except grpc.aio.AioRpcError:
        return []
    value = dict(trailing or ()).get(UNAVAILABLE_KEY, "")
    return [name for name in str(value).split(",") if name]
