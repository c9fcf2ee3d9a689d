"""Tests as callers of the services: channels whose calls carry a signed service token, and (when
the test plays the gateway) the actor its request names, signed as the gateway would sign it."""

from __future__ import annotations

import collections
from typing import Any

import grpc

from hirepay_dev.procs import ensure_service_token_secret
from hirepay_platform.identity import Actor, TokenMinter


def minter(caller: str) -> TokenMinter:
    """Signs as `caller` with this run's secret (the one every started process shares)."""
    return TokenMinter(caller, ensure_service_token_secret())


def call_metadata(
    caller: str, service: str, actor: Actor | None = None, *, secret: str | None = None
) -> list[tuple[str, str]]:
    """The metadata of one call from `caller` to `service` (with `actor`'s assertion if given)."""
    signer = TokenMinter(caller, secret or ensure_service_token_secret())
    return signer.metadata(service, actor)


def _vouched_actor(caller: str, request: Any) -> Actor | None:
    """The gateway vouches for the user it verified; a test playing the gateway vouches for the
    actor its request names (the services themselves never read that field)."""
    if caller != "gateway":
        return None
    try:
        if not request.HasField("actor"):
            return None
    except ValueError:  # the request has no actor field
        return None
    return Actor(request.actor.user_id, request.actor.role)


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _SignSync(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, caller: str, service: str) -> None:
        self._minter = minter(caller)
        self._caller = caller
        self._service = service

    def _details(self, details: Any, request: Any) -> _Details:
        extra = self._minter.metadata(self._service, _vouched_actor(self._caller, request))
        return _Details(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *extra],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, request), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details, request), request)


class _SignAio:
    def __init__(self, caller: str, service: str) -> None:
        self._minter = minter(caller)
        self._caller = caller
        self._service = service

    def _details(self, details: Any, request: Any) -> grpc.aio.ClientCallDetails:
        extra = self._minter.metadata(self._service, _vouched_actor(self._caller, request))
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *extra],
            details.credentials,
            details.wait_for_ready,
        )


# grpc.aio files each interceptor under one call type only, so each type gets its own class.
class _SignAioUnary(_SignAio, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details, request), request)


class _SignAioStream(_SignAio, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details, request), request)


def signed_channel(target: str, *, caller: str, service: str) -> grpc.Channel:
    """A blocking channel to `service` at `target` whose calls are signed as `caller`."""
    return grpc.intercept_channel(grpc.insecure_channel(target), _SignSync(caller, service))


def signed_aio_channel(target: str, *, caller: str, service: str) -> grpc.aio.Channel:
    """An asyncio channel to `service` at `target` whose calls are signed as `caller`."""
    return grpc.aio.insecure_channel(
        target, interceptors=[_SignAioUnary(caller, service), _SignAioStream(caller, service)]
    )
