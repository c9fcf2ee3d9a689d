"""gRPC server bootstrap shared by every service: health, reflection, interceptors, metrics, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from opentelemetry import trace

from hirepay_platform import eventloop, grpc_status, identity, metrics, tracing, workloop
from hirepay_platform.errors import HirepayError, ValidationError
from hirepay_platform.logs import configure_logging
from hirepay_platform.readiness import Check, DependencyHealthServicer, ReadinessWatcher
from hirepay_platform.settings import ServiceSettings
from hirepay_platform.untrusted import text_problem

log = logging.getLogger(__name__)

Worker = Callable[[asyncio.Event], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]

# No SO_REUSEPORT: a second process on the same port is a mistake to fail on, not to share with.
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


class PlatformInterceptor(grpc.aio.ServerInterceptor):
    """Around every RPC (inside the OpenTelemetry server span, see tracing.server_interceptor):
    RPC metrics, the caller's authentication (service token, gateway-signed actor, access policy:
    see identity.py) before any servicer runs, and the one mapping of errors to statuses (domain
    error -> its code + ErrorInfo, recorded on the span; anything else -> INTERNAL with a generic
    message, the trace logged here and never sent to the client). Health and reflection need no
    token (probes and tooling).

    GrpcApp does not install it as an interceptor: it wraps each servicer method once, when the
    servicer is added (`wrap_handler`, through `_WrappingServer`), so a call pays for none of
    grpc.aio's interceptor machinery (a coroutine, call details and a new method handler per
    call: issue 13). As an interceptor (the test fakes use it so) it does the same, with each
    method's wrapped handler made once.

    `carry_context`: set when the process exports no spans, so that no server span interceptor
    runs (see tracing.exporting); each call then runs in the caller's trace context, taken from
    its metadata, and its logs carry the caller's trace id as before."""

    def __init__(
        self,
        service: str,
        authenticator: identity.ServiceAuthenticator,
        *,
        carry_context: bool = False,
    ) -> None:
        self._service = service
        self._auth = authenticator
        self._domain = f"{service}.hirepay"
        self._carry_context = carry_context
        # (full method, the servicer's handler) -> the wrapped handler (interceptor use).
        self._wrapped: dict[tuple[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        key = (details.method, handler)
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrapped[key] = self.wrap_handler(
                handler, details.method.rsplit("/", 1)[-1]
            )
        return wrapped

    def wrap_handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` (RPC `method`, e.g. "GetJob") with the platform's behaviour around it; unary
        requests only (the kinds Hirepay serves), other kinds unchanged."""
        deserialize = handler.request_deserializer
        # The request's text is screened as it is decoded (_screening) when there is a decoder;
        # otherwise the wrapper checks the request it is given.
        screened = deserialize is not None
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, screened=screened),
                request_deserializer=_screening(deserialize) if screened else None,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, screened=screened),
                request_deserializer=_screening(deserialize) if screened else None,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _fail(self, context: grpc.aio.ServicerContext, method: str, exc: Exception) -> str:
        """Abort the call with the mapped status; return the code name for metrics."""
        if isinstance(exc, HirepayError):
            code, message, trailing = grpc_status.to_status(exc, self._domain)
            trace.get_current_span().set_attribute("hirepay.error_reason", exc.reason)
        else:
            log.exception("unhandled error in %s", method)
            code, message, trailing = grpc_status.to_status(
                HirepayError("internal error", reason="INTERNAL"), self._domain
            )
        trace.get_current_span().set_status(trace.StatusCode.ERROR)
        context.set_trailing_metadata(trailing)
        context.set_code(code)
        context.set_details(message)
        return code.name

    def _wrap_unary(self, inner: Any, method: str, *, screened: bool) -> Any:
        observe = _Observer(self._service, method)
        # A call answered OK counted and timed by the series' own one-call updates (no call of
        # _Observer's around them, issue 13); any other code through the observer.
        ok, latency = observe.ok, observe.latency
        authenticate = self._auth.authenticate
        carry_context = self._carry_context
        # The caller's context made current and restored by the ContextVar's own methods
        # (tracing.attach_context: 4 Python calls per RPC fewer than OpenTelemetry's functions).
        attach, detach, incoming = (
            tracing.attach_context,
            tracing.detach_context,
            tracing.incoming_context,
        )

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            metadata = context.invocation_metadata()
            trace_token = attach(incoming(metadata)) if carry_context else None
            caller_token = None
            try:
                caller_token = identity.set_current_caller(authenticate(metadata, method))
                if screened:
                    if type(request) is _Refused:
                        raise request.error()
                else:
                    _refuse_bad_text(request)
                return await inner(request, context)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                code = context.code().name if context.code() else "UNKNOWN"
                raise
            except Exception as exc:  # the one place that maps every failure
                code = await self._fail(context, method, exc)
                return None
            finally:
                if caller_token is not None:
                    identity.reset_current_caller(caller_token)
                if code == "OK":
                    ok()
                    latency(time.perf_counter() - started)
                else:
                    observe(code, started)
                # Answered (and committed): the workers may have work again (workloop.py).
                workloop.note_activity()
                if trace_token is not None:
                    detach(trace_token)

        return wrapper

    def _wrap_stream(self, inner: Any, method: str, *, screened: bool) -> Any:
        observe = _Observer(self._service, method)
        authenticate = self._auth.authenticate
        carry_context = self._carry_context

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            code = "OK"
            metadata = context.invocation_metadata()
            trace_token = (
                tracing.attach_context(tracing.incoming_context(metadata))
                if carry_context
                else None
            )
            caller_token = None
            try:
                caller_token = identity.set_current_caller(authenticate(metadata, method))
                if screened:
                    if type(request) is _Refused:
                        raise request.error()
                else:
                    _refuse_bad_text(request)
                async for item in inner(request, context):
                    yield item
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:
                code = await self._fail(context, method, exc)
            finally:
                if caller_token is not None:
                    with contextlib.suppress(ValueError):
                        identity.reset_current_caller(caller_token)
                observe(code, started)
                if trace_token is not None:
                    # (As the caller's: a stream may be finished in another context.)
                    with contextlib.suppress(ValueError):
                        tracing.detach_context(trace_token)

        return wrapper


class _Observer:
    """The RPC metrics of one method: its latency series and its count per status code, each
    looked up once (metrics.child) and counted through metrics.incrementer/observer, not per
    call."""

    __slots__ = ("_counts", "_method", "_service", "latency", "ok")

    def __init__(self, service: str, method: str) -> None:
        self._service = service
        self._method = method
        self.latency = metrics.observer(metrics.child(metrics.RPC_LATENCY, service, method))
        self._counts: dict[str, Callable[[], None]] = {}
        self.ok = self._count_of("OK")  # (most calls: see _wrap_unary)

    def __call__(self, code: str, started: float) -> None:
        self._count_of(code)()
        self.latency(time.perf_counter() - started)

    def _count_of(self, code: str) -> Callable[[], None]:
        count = self._counts.get(code)
        if count is None:
            count = self._counts[code] = metrics.incrementer(
                metrics.child(metrics.RPC_REQUESTS, self._service, self._method, code)
            )
        return count


class _WrappingServer:
    """What a generated `add_XServicer_to_server(servicer, server)` is given by GrpcApp.

    With `platform`, the method handlers it registers reach the real server wrapped by the
    platform (once, here), so no per-call interceptor is needed.

    Every method is served through generic handlers, none as a grpc.aio "registered method": the
    aio server keeps one pending request task per registered method and waits on all of them
    (asyncio.wait) for every RPC it accepts, a done-callback added to and removed from each: with
    the ~40 methods of a service that was a few hundred calls per RPC, more than the platform's
    own per-call work (issue 13). A generic handler is one dict lookup per call."""

    def __init__(self, server: grpc.aio.Server, platform: PlatformInterceptor | None) -> None:
        self._server = server
        self._platform = platform

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        platform = self._platform
        if platform is not None:
            handlers = {name: platform.wrap_handler(h, name) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, handlers),)
        )

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        platform = self._platform
        if platform is None:
            self._server.add_generic_rpc_handlers(handlers)
            return
        self._server.add_generic_rpc_handlers(
            [_WrappedGenericHandler(h, platform) for h in handlers]
        )


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, platform: PlatformInterceptor) -> None:
        self._inner = inner
        self._platform = platform
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method in self._wrapped:
            return self._wrapped[method]
        handler = self._inner.service(details)
        wrapped = (
            None
            if handler is None
            else self._platform.wrap_handler(handler, method.rsplit("/", 1)[-1])
        )
        self._wrapped[method] = wrapped
        return wrapped


class _Refused:
    """What a screened decoder (_screening) hands the wrapper instead of a request holding text
    that may not enter the system: the wrapper refuses it once the caller is authenticated."""

    __slots__ = ("field", "problem")

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem

    def error(self) -> ValidationError:
        return ValidationError(f"{self.field} {self.problem}", fields={self.field: self.problem})


def _screening(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`deserialize`, screening the decoded request's text (message_text_problem) only when its
    encoding holds a 0x00 byte: a NUL in any string field, at any depth, is a 0x00 byte in the
    encoded request, and a lone surrogate never decodes at all (protobuf refuses a proto3 string
    that is not valid UTF-8, as the CESU-8 bytes of a surrogate are not). Most requests hold no
    0x00 byte (proto3 leaves zero values out), so their fields are not walked one by one on
    every call (issue 13); a request that does is walked as before."""

    def screened(raw: bytes) -> Any:
        request = deserialize(raw)
        if b"\x00" in raw:
            found = message_text_problem(request)
            if found is not None:
                return _Refused(*found)
        return request

    return screened


def _refuse_bad_text(request: Any) -> None:
    """A direct gRPC call is as untrusted as an HTTP one: NUL or lone surrogates in any string
    field are INVALID_ARGUMENT here, before a handler could pass them to the database."""
    found = message_text_problem(request)
    if found is not None:
        raise _Refused(*found).error()


def message_text_problem(message: Message, prefix: str = "") -> tuple[str, str] | None:
    """The first string field of a protobuf message (nested messages, repeated fields and maps
    included) holding text that may not enter the system, as (field path, problem)."""
    for name, value in _field_values(message, prefix):
        if isinstance(value, str):
            problem = text_problem(value)
            if problem is not None:
                return name, problem
        elif isinstance(value, Message):
            found = message_text_problem(value, f"{name}.")
            if found is not None:
                return found
    return None


def _field_values(message: Message, prefix: str) -> Iterator[tuple[str, Any]]:
    """(path, value) of every set field; repeated fields and maps (keys too) one item at a time."""
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                yield name, key
                yield name, item
        elif field.is_repeated:
            for item in value:
                yield name, item
        else:
            yield name, value


class GrpcApp:
    """One service process: its servicers, background workers and lifecycle hooks."""

    def __init__(
        self, name: str, settings: ServiceSettings, access: identity.AccessPolicy | None = None
    ) -> None:
        """`access`: which calling services may call which RPCs (None: any authenticated one)."""
        self.name = name
        self.settings = settings
        self.access = access
        self._services: list[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]] = []
        self._workers: list[Worker] = []
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._checks: dict[str, Check] = {}
        self.health = DependencyHealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None

    def add_service(
        self, add_fn: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str
    ) -> None:
        """Register a servicer, e.g. (add_WalletServiceServicer_to_server, servicer, 'hirepay.wallet.v1.WalletService')."""
        self._services.append((add_fn, servicer, full_name))

    def add_worker(self, worker: Worker) -> None:
        """A background loop; it must return soon after the stop event is set."""
        self._workers.append(worker)

    def add_readiness_check(self, dependency: str, check: Check) -> None:
        """A dependency re-checked every `readiness_interval_seconds` while serving; when `check`
        raises (or hangs past `readiness_timeout_seconds`) the service reports NOT_SERVING and
        names `dependency` in its health replies, until the check passes again."""
        self._checks[dependency] = check

    def on_startup(self, hook: Hook) -> None:
        self._startup.append(hook)

    def on_shutdown(self, hook: Hook) -> None:
        self._shutdown.append(hook)

    async def _set_ready(self, unavailable: tuple[str, ...]) -> None:
        self.health.unavailable = unavailable
        await self._set_serving(
            health_pb2.HealthCheckResponse.NOT_SERVING
            if unavailable
            else health_pb2.HealthCheckResponse.SERVING
        )

    async def _set_serving(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        await self.health.set("", status)
        for _, _, full_name in self._services:
            await self.health.set(full_name, status)

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set (or SIGTERM/SIGINT), then shut down gracefully."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        secret = self.settings.service_token_secret.get_secret_value()
        # Clients this process opens sign as this service; its server verifies its callers.
        identity.configure(self.name, secret)
        authenticator = identity.ServiceAuthenticator(self.name, secret, self.access)
        for hook in self._startup:
            await hook()
        # The OpenTelemetry server span only when spans are exported (tracing.exporting): a span
        # nobody sees costs CPU on every call; without it the platform's wrapper carries the
        # caller's trace context itself. The platform's behaviour wraps each servicer method
        # once (_WrappingServer), inside the span interceptor's span when there is one.
        exporting = tracing.exporting()
        platform = PlatformInterceptor(self.name, authenticator, carry_context=not exporting)
        server = grpc.aio.server(
            interceptors=[tracing.server_interceptor()] if exporting else None,
            options=SERVER_OPTIONS,
        )
        self.server = server
        wrapping = _WrappingServer(server, platform)
        for add_fn, servicer, _ in self._services:
            add_fn(servicer, wrapping)
        # Probes and tooling: served as they are (no token), through generic handlers too.
        plain = _WrappingServer(server, None)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, plain)
        names = [full for _, _, full in self._services]
        # reflection.enable_server_reflection, with the asyncio servicer it picks for an aio server.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(
                [
                    *names,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ]
            ),
            plain,
        )
        self.port = server.add_insecure_port(f"{self.settings.grpc_host}:{self.settings.grpc_port}")
        await server.start()
        await self._set_serving(health_pb2.HealthCheckResponse.SERVING)
        workers = [asyncio.create_task(w(stop), name=f"{self.name}-worker") for w in self._workers]
        readiness = ReadinessWatcher(
            self.name,
            self._checks,
            self._set_ready,
            interval=self.settings.readiness_interval_seconds,
            timeout=self.settings.readiness_timeout_seconds,
        )
        watcher = asyncio.create_task(readiness.run(stop), name=f"{self.name}-readiness")
        log.info(
            "%s listening on %s:%s (metrics on %s:%s)",
            self.name,
            self.settings.grpc_host,
            self.port,
            self.settings.metrics_host,
            self.settings.metrics_port,
        )
        await stop.wait()
        log.info("%s shutting down", self.name)
        # The watcher must not report SERVING again once draining has begun.
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        # Stop advertising first so load balancers drain us, then let in-flight calls finish.
        await self._set_serving(health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(self.settings.shutdown_grace_seconds)
        # Workers watch the stop event; one that does not return within the grace period is cancelled.
        _, pending = (
            await asyncio.wait(workers, timeout=self.settings.shutdown_grace_seconds)
            if workers
            else (set(), set())
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for hook in self._shutdown:
            await hook()
        log.info("%s stopped", self.name)

    def run(self) -> None:
        """Process entry point: logs, tracing, metrics port, the collector settled, then serve until
        signalled."""
        configure_logging(self.name, self.settings.log_level)
        tracing.setup_tracing(self.name, self.settings.traces)
        metrics.serve_metrics(self.settings.metrics_port, self.settings.metrics_host)
        eventloop.settle_gc()
        eventloop.run(self.serve())
