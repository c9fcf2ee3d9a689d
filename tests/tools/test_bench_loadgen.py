"""The bench's load generators (issue 13: they share the two cores with what they measure): the
bench on the platform's event loop, the posting cases' lean HTTP/1.1 client and its checks,
and the Python calls each operation costs the load generator, pinned."""

from __future__ import annotations

import asyncio
import json
import os
import pstats
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev import bench, bench_posting, benchlib
from hirepay_dev.bench_wallet import Fixture, Signer
from hirepay_dev.benchhttp import AnswerError, PostingClient
from hirepay_dev.benchlib import closed_loop, other_databases
from hirepay_platform import eventloop
from hirepay_platform.grpccore import GRPC_CORE_ENV
from hirepay_platform.identity import TokenMinter
from tests.support.python_calls import profiled

_ACTIVE = json.dumps({"job": {"id": "job_1", "status": "active"}}).encode()


def answer(
    body: bytes = _ACTIVE, status: str = "201 Created", headers: tuple[str, ...] = ()
) -> bytes:
    """An answer as the gateway (uvicorn) frames it, with Content-Length."""
    head = [
        f"HTTP/1.1 {status}",
        "date: Wed, 02 Dec 2026 15:00:00 GMT",
        "server: uvicorn",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "ratelimit-limit: 100000",
        "ratelimit-remaining: 99999",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# --- the bench's event loop ---------------------------------------------------------------------


def test_the_bench_runs_on_the_platforms_event_loop(monkeypatch, pg_server_url):
    """`make bench` runs on uvloop, as the services do; what it runs in threads (psql,
    pgbench, the stacks) still runs from it."""
    seen: dict[str, Any] = {}

    async def main(only: str, out_file: str | None, quick: bool = False) -> None:
        seen["uvloop"] = eventloop.uses_uvloop()
        seen["args"] = (only, out_file, quick)
        seen["databases"] = await asyncio.to_thread(other_databases, pg_server_url)

    monkeypatch.setattr(bench, "main", main)
    bench.cli(["--only", "posting", "--quick"])
    assert seen["uvloop"] is True
    assert seen["args"] == ("posting", None, True)
    assert isinstance(seen["databases"], list)


class Restarted(Exception):
    """os.execve, called: the process would have started again."""


def _no_grpc_core_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in GRPC_CORE_ENV:
        monkeypatch.delenv(name, raising=False)


def test_the_bench_starts_again_with_the_platforms_grpc_core_settings(monkeypatch):
    """`python -m hirepay_dev.bench` in an environment without the platform's gRPC core settings
    starts itself again with them (grpc reads them at import), its arguments and the rest of its
    environment as they were: the wallet cases' load generator calls the wallet as jobs does."""
    _no_grpc_core_env(monkeypatch)
    monkeypatch.setenv("HIREPAY_BENCH_TEST_MARK", "kept")
    monkeypatch.setattr(sys, "argv", ["bench.py", "--only", "wallet", "--quick"])
    started: list[tuple[str, list[str], dict[str, str]]] = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        started.append((path, argv, env))
        raise Restarted

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(bench, "cli", lambda argv=None: pytest.fail("ran without the settings"))
    with pytest.raises(Restarted):
        bench.run()
    ((path, argv, env),) = started
    assert path == sys.executable
    assert argv == [sys.executable, "-m", "hirepay_dev.bench", "--only", "wallet", "--quick"]
    assert {name: env[name] for name in GRPC_CORE_ENV} == dict(GRPC_CORE_ENV)
    assert env["HIREPAY_BENCH_TEST_MARK"] == "kept"


@pytest.mark.parametrize("own_value", [False, True])
def test_the_bench_runs_at_once_with_the_settings_or_an_operators_own(monkeypatch, own_value):
    """With the settings in its environment (started again, or by an operator who set a value of
    their own, which wins) the bench runs its command line in this process."""
    for name, value in GRPC_CORE_ENV.items():
        monkeypatch.setenv(name, "operator-choice" if own_value else value)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--only", "posting"])
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail("started again"))
    ran: list[object] = []
    monkeypatch.setattr(bench, "cli", lambda argv=None: ran.append(argv))
    bench.run()
    assert ran == [None]


# --- the posting cases' HTTP client -------------------------------------------------------------


class Gateway:
    """A tiny HTTP/1.1 server in the test's loop: reads each request whole (Content-Length),
    records it, and answers it with the next scripted reply: bytes to write, then whether to
    close the connection (None: write nothing and close; "silent": write nothing, keep it)."""

    def __init__(self, replies: Callable[[int], tuple[bytes | str | None, bool]]) -> None:
        self.replies = replies
        self.requests: list[tuple[int, bytes, dict[bytes, bytes], bytes]] = []
        self.connections = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def __aenter__(self) -> Gateway:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._open.values():
            writer.close()  # the connections' handlers end (their reads see the end)
        await asyncio.gather(*self._open, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        connection = self.connections
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *lines = head[:-4].split(b"\r\n")
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (h.partition(b":") for h in lines)
                }
                body = await reader.readexactly(int(headers[b"content-length"]))
                self.requests.append((connection, line, headers, body))
                reply, close = self.replies(len(self.requests) - 1)
                if isinstance(reply, bytes):
                    writer.write(reply)
                    await writer.drain()
                if close or reply is None:
                    return
        finally:
            writer.close()
            self._open.pop(task, None)


def replying(*script: tuple[bytes | str | None, bool]) -> Callable[[int], Any]:
    return lambda n: script[n] if n < len(script) else (answer(), False)


async def test_the_posting_client_sends_each_case_its_own_keys_on_one_connection_per_worker():
    async with Gateway(replying()) as gateway:
        with bench_posting.posting_clients(gateway.url, 2) as clients:
            new_case = bench_posting.posters(clients)
            first, second = new_case(), new_case()
            for i in range(3):
                await first(0, i)
                await first(1, i)
            await second(0, 0)
    assert gateway.connections == 2  # kept alive: one per worker
    keys = [headers[b"idempotency-key"] for _, _, headers, _ in gateway.requests]
    assert len(set(keys)) == len(keys) == 7
    for connection, line, headers, body in gateway.requests:
        assert line == b"POST /api/jobs/create-with-payment HTTP/1.1"
        assert headers[b"content-type"] == b"application/json"
        assert headers[b"authorization"].startswith(b"Bearer ")
        assert headers[b"host"] == gateway.url.removeprefix("http://").encode()
        assert json.loads(body) == bench_posting.BODY
        # The key: the run's, the case's, the worker's (its connection), the call's.
        assert int(headers[b"idempotency-key"].split(b"-")[2]) == connection
    # Each worker posts as its own company; each case's keys are its own.
    tokens = {c: headers[b"authorization"] for c, _, headers, _ in gateway.requests}
    assert tokens[0] != tokens[1]
    assert keys[0].split(b"-")[1] != keys[-1].split(b"-")[1]


BAD_ANSWERS = {
    "not 201": ((answer(b'{"detail":"boom"}', "500 Internal Server Error"), False), "500"),
    "not active": (
        (answer(json.dumps({"job": {"status": "pending_payment"}}).encode()), False),
        "posting failed: 201",
    ),
    "a replay": ((answer(headers=("idempotent-replayed: true",)), False), "replayed"),
    "closed before the answer": ((None, True), "closed before the answer"),
    "closed mid-body": ((answer()[:-5], True), "closed before the answer"),
    "chunked": (
        (
            b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(_ACTIVE), _ACTIVE),
            False,
        ),
        "chunked",
    ),
    "no Content-Length": (
        (b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\r\n" + _ACTIVE, True),
        "without Content-Length",
    ),
    "bytes beyond the answer": ((answer() + b"HTTP/1.1 201", False), "beyond"),
    "an interim answer": ((b"HTTP/1.1 100 Continue\r\n\r\n" + answer(), False), "interim"),
    "not HTTP/1.1": ((b"HTTP/1.0 201 Created\r\ncontent-length: 0\r\n\r\n", True), "status line"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ANSWERS))
async def test_the_posting_client_reports_a_bad_answer_as_the_postings_error(kind):
    """Every answer that is not a new active posting fails the posting (an error closed_loop
    counts, never a silent success); the worker's next posting goes on, on a fresh connection
    when the last one's framing was lost."""
    reply, expected = BAD_ANSWERS[kind]
    async with Gateway(replying(reply)) as gateway:
        with bench_posting.posting_clients(gateway.url, 1) as clients:
            post_job = bench_posting.posters(clients)()
            with pytest.raises((RuntimeError, AnswerError), match=expected):
                await post_job(0, 0)
            await post_job(0, 1)  # the next one is answered well
    assert len(gateway.requests) == 2


async def test_a_posting_without_an_answer_in_time_fails():
    async with Gateway(lambda n: ("silent", False)) as gateway:
        client = PostingClient(gateway.url, timeout=0.2)
        try:
            request = client.numbered("POST", "/x", {"Idempotency-Key": "k-"}, b"{}")
            with pytest.raises(AnswerError, match="no answer in time"):
                await client.send(request % 1)
        finally:
            client.close()


async def test_closed_loop_counts_the_bad_answers_as_errors_not_operations():
    """Through the case's closed loop: only new active postings are operations."""

    def replies(n: int) -> tuple[bytes | None, bool]:
        if n % 3 == 1:
            return answer(b'{"detail":"no"}', "502 Bad Gateway"), False
        if n % 3 == 2:
            return None, True
        return answer(), False

    async with Gateway(replies) as gateway:
        with bench_posting.posting_clients(gateway.url, 2) as clients:
            result = await closed_loop(
                "posting",
                bench_posting.posters(clients)(),
                concurrency=2,
                seconds=0.3,
                warmup=0,
                settle_seconds=0.0,
                settle_calls=0,
            )
    assert result.ops > 0 and result.errors > 0
    assert set(result.error_kinds) == {
        'RuntimeError: posting failed: 502 b\'{"detail":"no"}\'',
        "AnswerError: the connection was closed before the answer's end",
    }


def test_a_request_template_refuses_a_line_break_in_a_header():
    client = PostingClient("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="line break"):
        client.numbered("POST", "/x", {"A": "b\r\nEvil: 1", "Idempotency-Key": "k-"}, b"")
    with pytest.raises(ValueError, match="http://"):
        PostingClient("https://example.com")


# --- the load generator's Python calls per operation --------------------------------------------


class _ThreadGateway:
    """A fixed 201 answer to every request, served by a thread (whose calls the profiler of the
    loop's thread does not see)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    rest += connection.recv(65536)
                data = rest[length:]
                connection.sendall(answer())


def _calls_per_op(op: Callable[[int, int], Awaitable[None]], n: int) -> float:
    """Python and built-in calls per `op(0, i)` in this thread, after a warm-up (uvloop)."""

    async def count() -> float:
        for i in range(5):
            await op(0, -1 - i)
        with profiled() as profile:
            for i in range(n):
                await op(0, i)
        return (pstats.Stats(profile).total_calls - 1) / n  # type: ignore[attr-defined]

    return eventloop.run(count(), loop="uvloop")


def test_the_posting_load_generator_makes_few_python_calls_per_posting():
    """A posting costs the load generator 33 Python calls on uvloop (the count's own loop
    included): the key formatted into the worker's request bytes, one write, one
    `data_received` reading the answer's head with bytes methods, the JSON check. With httpx
    (one AsyncClient per worker) it was ~3,070 against the gateway, and the generator's CPU per
    posting at c=32 1.50 ms (0.14 with this client)."""
    gateway = _ThreadGateway()
    gateway.thread.start()
    with bench_posting.posting_clients(f"http://127.0.0.1:{gateway.port}", 1) as clients:
        per_posting = _calls_per_op(bench_posting.posters(clients)(), 100)
    assert per_posting <= 34, per_posting  # an answer read in two pieces costs 3 more


class _Wallet(wpb_grpc.WalletServiceServicer):
    def Transfer(self, request: Any, context: Any) -> Any:
        return wpb.TransferResponse()

    def ReserveHold(self, request: Any, context: Any) -> Any:
        return wpb.HoldResponse()

    def ConfirmHold(self, request: Any, context: Any) -> Any:
        return wpb.HoldResponse()


@pytest.fixture
def wallet_target() -> Iterator[str]:
    """A wallet answering every call at once, served by grpc's threads (not counted)."""
    server = grpc.server(futures.ThreadPoolExecutor(2))
    wpb_grpc.add_WalletServiceServicer_to_server(_Wallet(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def test_the_wallet_load_generator_makes_few_python_calls_per_call(wallet_target):
    """Per Transfer / Reserve+Confirm pair the wallet cases' load generator costs 71 / 139
    Python calls on uvloop, most of them grpc.aio's own per unary call (~63): on asyncio's loop
    they were 156 / 307, and the operations made their legs, amounts and shares again and asked
    the minter for the token on every call (78 / 151 on uvloop)."""
    counts: dict[str, float] = {}

    async def count() -> None:
        async with grpc.aio.insecure_channel(wallet_target) as channel:
            minter = TokenMinter("jobs", "bench-loadgen-secret-0123456789abcdef01234567")
            fixture = Fixture(wpb_grpc.WalletServiceStub(channel), 1, Signer("wallet", minter))
            fixture.payers, fixture.payees, fixture.revenue = ["p" * 32], ["q" * 32], "r" * 32
            for name, op in (
                ("transfer", fixture.transfer(None)),
                ("fee", fixture.transfer(fixture.revenue)),
                ("reserve+confirm", fixture.reserve_confirm(False)),
                ("reserve+confirm, fee", fixture.reserve_confirm(True)),
            ):
                for i in range(5):
                    await op(0, -1 - i)
                with profiled() as profile:
                    for i in range(100):
                        await op(0, i)
                stats = pstats.Stats(profile)
                counts[name] = (stats.total_calls - 1) / 100  # type: ignore[attr-defined]

    eventloop.run(count(), loop="uvloop")
    assert counts["transfer"] <= 71 and counts["fee"] <= 71, counts
    assert counts["reserve+confirm"] <= 139 and counts["reserve+confirm, fee"] <= 139, counts


def test_closed_loop_reads_the_clock_once_per_call(monkeypatch):
    """The measured loop's own cost per call: one clock reading (a call's end is the next
    one's start and the deadline's check) and one append."""
    reads = [0]
    now = [0.0]

    def perf_counter() -> float:
        reads[0] += 1
        now[0] += 0.001
        return now[0]

    monkeypatch.setattr(benchlib, "time", SimpleNamespace(perf_counter=perf_counter))
    window: dict[str, int] = {}

    class Meter:
        async def start(self) -> None:
            window["start"] = reads[0]

        async def stop(self) -> dict[str, float]:
            window["stop"] = reads[0]
            return {}

    async def op(worker: int, i: int) -> None:
        await asyncio.sleep(0)

    result = eventloop.run(
        closed_loop(
            "case",
            op,
            concurrency=2,
            seconds=0.2,
            warmup=0,
            settle_seconds=0.0,
            settle_calls=0,
            meter=Meter(),  # type: ignore[arg-type]
        ),
        loop="uvloop",
    )
    measured = window["stop"] - window["start"]
    # Besides one per call: the deadline and the start, each worker's first, the elapsed time.
    assert result.ops > 50 and measured <= result.ops + 2 + 2 + 1, (measured, result.ops)
