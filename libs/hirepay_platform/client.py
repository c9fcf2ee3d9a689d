"""Calling other services: channels traced by OpenTelemetry, a signed service token (and, at the edge, the
user's actor assertion) on every call, a deadline on every call, retries only when safe."""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Any, Generic, TypeVar

import grpc
from opentelemetry import propagate

from hirepay_platform import identity, metrics, tracing
from hirepay_platform.errors import ErrorKind, RemoteError
from hirepay_platform.grpc_status import from_rpc_error

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
# How many distinct call metadata a client keeps for reuse (ServiceClient._metadata_of).
_SENT_MAX = 256


def open_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel for in-cluster traffic (mTLS belongs to the mesh), its unary calls
    traced by the OpenTelemetry client interceptor (a CLIENT span, W3C context in metadata) when
    the process exports spans; otherwise without interceptors (an intercepted call costs several
    times a plain one in grpc.aio) and ServiceClient.call carries the W3C context itself."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 0),  # retries are ours: only for calls carrying a request_id
        ],
        interceptors=tracing.client_interceptors() if tracing.exporting() else None,
    )


def _is_idempotent(request: Any) -> bool:
    """A call may be retried only if the request carries an idempotency key."""
    return bool(getattr(request, "request_id", ""))


class _CallCounts:
    """hirepay_rpc_client_requests_total of one target and method, a series per status code
    looked up once (metrics.child) and counted through metrics.incrementer."""

    __slots__ = ("_by_code", "_method", "_target", "ok")

    def __init__(self, target: str, method: str) -> None:
        self._target = target
        self._method = method
        self._by_code: dict[str, Callable[[], None]] = {}
        # The count of a call answered OK (most calls), called as it is: no Python call of
        # this class's per call (issue 13).
        self.ok = self._of("OK")

    def count(self, code: str) -> None:
        self._of(code)()

    def _of(self, code: str) -> Callable[[], None]:
        increment = self._by_code.get(code)
        if increment is None:
            increment = self._by_code[code] = metrics.incrementer(
                metrics.child(metrics.CLIENT_REQUESTS, self._target, self._method, code)
            )
        return increment


class ServiceClient:
    """Wraps one channel to service `name`; `call` signs the call, sets the deadline, propagates
    the trace and maps errors."""

    def __init__(
        self,
        name: str,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_attempts: int = 4,
        backoff: float = 0.05,
        minter: identity.TokenMinter | None = None,
    ) -> None:
        """`minter`: who this client signs as (default: the process identity set at start-up)."""
        self.name = name
        self._minter = minter
        self.target = target
        self.channel = open_channel(target)
        # No CLIENT span interceptor on the channel (nothing exported): `call` sends the context.
        self._carry_context = not tracing.exporting()
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        # Stub method's full name -> its counters (hirepay_rpc_client_requests_total).
        self._counts: dict[object, _CallCounts] = {}
        # What calls were sent with, by its items (tokens, trace context): see _metadata_of.
        self._sent: dict[tuple[tuple[str, str], ...], grpc.aio.Metadata] = {}
        # What a call made by a minter for an actor in a trace context is sent with, and until
        # when: see _call_metadata.
        self._ready: dict[tuple[object, ...], _Ready] = {}
        # The signed tokens a minter's calls for an actor carry, whatever their trace context,
        # and until when: see _call_metadata.
        self._signed: dict[tuple[object, ...], _Signed] = {}

    async def call(
        self,
        method: Callable[..., Any],
        request: Any,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call a stub method; raise RemoteError (reason from ErrorInfo) on failure.

        The deadline covers all attempts; UNAVAILABLE is retried with jittered backoff only when
        the request has a request_id, so a retry can never apply a change twice.
        """
        budget = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + budget
        # (Looked up here: _counts_of only makes them, once per method; a Python call fewer.)
        counts = self._counts.get(getattr(method, "_method", b"")) or self._counts_of(method)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RemoteError(
                    f"{self.name} did not answer in time",
                    reason="DEADLINE_EXCEEDED",
                    kind=ErrorKind.DEADLINE_EXCEEDED,
                    service=self.name,
                )
            try:
                # The token is minted per attempt: a retry late in a long budget is not refused as
                # expired.
                metadata = self._call_metadata()
                response = await method(request, timeout=remaining, metadata=metadata)
                counts.ok()
                return response
            except grpc.aio.AioRpcError as exc:
                counts.count(exc.code().name)
                retryable = exc.code() == grpc.StatusCode.UNAVAILABLE and _is_idempotent(request)
                if retryable and attempt < self.max_attempts:
                    delay = self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random())
                    await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                    continue
                raise from_rpc_error(exc, self.name) from None

    def _counts_of(self, method: Callable[..., Any]) -> _CallCounts:
        """The outgoing-call counters of a stub method (by its full name), made on first use."""
        name = getattr(method, "_method", b"")
        counts = self._counts.get(name)
        if counts is None:
            method_name = name.decode().rsplit("/", 1)[-1] if isinstance(name, bytes) else "call"
            counts = self._counts[name] = _CallCounts(self.name, method_name)
        return counts

    def _call_metadata(self) -> grpc.aio.Metadata:
        """What a call made now is sent with: the signed tokens of this client's minter for the
        context's outgoing actor, and the trace context it is made in (when the channel does not
        inject it), as `_metadata_of` made it for them. Kept per (minter, actor, context,
        propagator) until the first of its tokens is no longer handed out (TokenMinter.signed:
        half its life), so the calls of one request or trace (jobs calls payments twice per
        posting, payments calls wallet per step) look it up once instead of asking the minter
        for each token and the propagator for the context: about 10 Python calls per call
        fewer (issue 13). A call made later, for another actor, in another context, under
        another propagator or by another minter gets its own, as before.

        The signed tokens themselves are kept per (minter, actor) alone, for as long (_signed):
        a call in a new trace (at the edge every request is one; each posting reaches jobs and
        payments in its own) adds only its trace context to the tokens the client sent before,
        instead of asking the minter for each token again (TokenMinter.signed and its caches:
        3 Python calls per call, 5 with an actor; issue 13).

        A service's clients sign as the process (no minter of their own): its minter is read as
        the module keeps it, process_minter called only to refuse when there is none (a Python
        call per call fewer, issue 13)."""
        minter = self._minter or identity._minter or identity.process_minter()
        actor = identity.outgoing_actor()
        now = minter.clock()
        if self._carry_context:
            ctx: object = tracing.current_context()
            textmap: object = propagate.get_global_textmap()
        else:
            ctx = textmap = None
        # An actor by its fields (hashed by str, not by the dataclass's Python __hash__).
        who = None if actor is None else (actor.user_id, actor.role)
        key = (id(minter), who, id(ctx))
        ready = self._ready.get(key)
        if (
            ready is not None
            and ready[1] is minter
            and ready[2] is ctx
            and ready[3] is textmap
            and now < ready[4]
        ):
            return ready[0]
        signer = (id(minter), who)
        kept = self._signed.get(signer)
        if kept is not None and kept[1] is minter and now < kept[2]:
            signed, until = kept[0], kept[2]
        else:
            signed, until = minter.signed(self.name, actor, now)
            if len(self._signed) >= _SENT_MAX:
                self._signed.clear()
            # (The minter is kept with them: its id is no other's while kept.)
            self._signed[signer] = (signed, minter, until)
        metadata = self._metadata_of(
            (*signed, *tracing.outgoing_context(ctx, textmap)) if ctx is not None else signed
        )
        if len(self._ready) >= _SENT_MAX:
            self._ready.clear()
        # (The minter and context are kept with it: their ids are no others' while kept.)
        self._ready[key] = (metadata, minter, ctx, textmap, until)
        return metadata

    def _metadata_of(self, items: tuple[tuple[str, str], ...]) -> grpc.aio.Metadata:
        """`items` as the grpc.aio.Metadata a call is handed (a list would be checked against
        typing's Sequence and copied into one on every call), the one made for the same items
        before when there is one: the calls of one trace (jobs calls payments twice per posting,
        payments calls wallet for each step) send the same tokens, reused for half their life,
        and the same context, and making a Metadata is about as costly as the rest of this
        client's work per call (issue 13). Nothing changes a Metadata once made: grpc.aio sends
        it as given, and the tracing interceptor (when spans are exported) injects into a copy.
        Bounded: emptied when full (calls of a trace come close together)."""
        metadata = self._sent.get(items)
        if metadata is None:
            if len(self._sent) >= _SENT_MAX:
                self._sent.clear()
            metadata = self._sent[items] = _SentMetadata(*items)
        return metadata

    def metadata(self) -> list[tuple[str, str]]:
        """What `call` sends with a call (the signed service token, the actor; the trace context
        is added by the channel's interceptor), for calls it cannot wrap, such as a stream."""
        return list(self._signer().metadata(self.name))

    def _signer(self) -> identity.TokenMinter:
        """Who this client's calls are signed by: its own minter, else the process's."""
        return self._minter or identity.process_minter()

    async def close(self) -> None:
        await self.channel.close()


# What ServiceClient._call_metadata keeps for one (minter, actor, context, propagator): the
# metadata, the minter, the context, the propagator, until when (a tuple: no Python call to make).
_Ready = tuple[grpc.aio.Metadata, identity.TokenMinter, object, object, float]
# What it keeps for one (minter, actor): the signed tokens, the minter, until when.
_Signed = tuple[tuple[tuple[str, str], ...], identity.TokenMinter, float]


class _SentMetadata(grpc.aio.Metadata):
    """The grpc.aio.Metadata a call is sent with (`ServiceClient._metadata_of`), its items also
    kept as the tuple grpc.aio copies it into for every call (Metadata's `__iter__` is a
    generator resumed per item) and its size known (each call asks `len` twice, a sum over its
    keys' lists), made without an `add` per item. With a token, an actor and a trace context,
    from making it to grpc.aio's copy: 32 -> 20 Python calls per call; for one made before (the
    calls of one trace), 20 -> 13. At the edge every request is a new trace, so every call makes
    its own (issue 13). Anything that changes it through its methods remakes both, so
    it reads as a Metadata does; a list from `get_all` changed in place is not seen (nothing
    here or in grpc.aio does that to a call's metadata).

    Its size and its iteration are the kept tuple's own C methods, handed out by properties
    (Python looks a special method up on the class and, when it finds a descriptor, calls what
    the descriptor gives): grpc.aio's truth test and `tuple(metadata)` (its length hint, then
    its iterator) run no Python function of this class's, where `__len__` and `__iter__`
    methods were 3 Python calls per client call (issue 13)."""

    # (The tuple's bound `__len__` and `__iter__`: C methods, called by len(), bool(), iter().)
    __len__ = property(attrgetter("_len"))  # type: ignore[assignment]
    __iter__ = property(attrgetter("_iter"))  # type: ignore[assignment]

    def __init__(self, *args: tuple[str, str | bytes]) -> None:
        # One list per key (in first-seen order, as Metadata groups them): with no key twice,
        # the items in the order given are the order Metadata iterates in.
        # (A loop, not a comprehension: no Python call of its own.)
        grouped: OrderedDict[str, list[str | bytes]] = OrderedDict()
        for key, value in args:
            grouped[key] = [value]
        if len(grouped) == len(args):
            self._metadata = grouped
            # (As _remade keeps them, inline: no Python call of its own.)
            self._items = args
            self._len: Callable[[], int] = args.__len__
            self._iter: Callable[[], Iterator[tuple[str, str | bytes]]] = args.__iter__
        else:
            super().__init__(*args)
            self._remade()

    def _remade(self) -> None:
        self._items = items = tuple(super().__iter__())
        self._len = items.__len__
        self._iter = items.__iter__

    def __add__(self, other: Any) -> grpc.aio.Metadata:
        # (Metadata's own takes only its own class: a plain one here would be refused.)
        if isinstance(other, grpc.aio.Metadata):
            return grpc.aio.Metadata(*self._items, *other)
        return super().__add__(other)

    def add(self, key: str, value: str | bytes) -> None:
        super().add(key, value)
        self._remade()

    def __setitem__(self, key: str, value: str | bytes) -> None:
        super().__setitem__(key, value)
        self._remade()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._remade()

    def delete_all(self, key: str) -> None:
        super().delete_all(key)
        self._remade()

    def set_all(self, key: str, values: list[str | bytes]) -> None:
        super().set_all(key, values)
        self._remade()


_Stub = TypeVar("_Stub")


class LazyServiceClient(Generic[_Stub]):
    """A ServiceClient opened on first use, inside the running event loop (aio channels bind to the
    loop that creates them, and a process builds its wiring before the loop starts), with its
    service's stub made once on its channel: a stub registers every method of its service on the
    channel when made (PaymentsServiceStub: 25 of them, about 260 Python calls; WalletServiceStub
    about 29 us of CPU), which cost more than the call it made when made per call (issue 13)."""

    def __init__(
        self, name: str, target: str, timeout: float, stub_type: Callable[[grpc.aio.Channel], _Stub]
    ) -> None:
        self.name = name
        self.target = target
        self.timeout = timeout
        self._stub_type = stub_type
        self._client: ServiceClient | None = None
        self._stub: _Stub | None = None

    @property
    def client(self) -> ServiceClient:
        if self._client is None:
            self._client = ServiceClient(self.name, self.target, timeout=self.timeout)
        return self._client

    @property
    def stub(self) -> _Stub:
        """The service's stub on this client's channel, made once."""
        if self._stub is None:
            self._stub = self._stub_type(self.client.channel)
        return self._stub

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class SigningInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Signs every unary call of a raw channel to `service` (tools that use stubs directly, such as
    the benchmarks; services use ServiceClient)."""

    def __init__(self, service: str, minter: identity.TokenMinter) -> None:
        self._service = service
        self._minter = minter

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        signed = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *self._minter.metadata(self._service)],
            details.credentials,
            details.wait_for_ready,
        )
        return await continuation(signed, request)
