"""The settings of gRPC's C core every Hirepay process runs with: environment variables, because
grpcio reads them once, when `grpc` is first imported (before any code of ours could set them), so
they are given to a process by whoever starts it: the project's launcher (`hirepay_dev.procs`, for
`make run`, the tests and the benchmarks) and the image (deploy/Dockerfile, for every Deployment).
A value already in the environment wins, so an operator can set another one.

`GRPC_EXPERIMENTS=-event_engine_client,-event_engine_listener`: gRPC's socket I/O is done by the
thread grpc.aio already runs to wait on its completion queue (iomgr's epoll poller, Python's gRPC
I/O path until grpcio 1.80) instead of by EventEngine worker threads. With the EventEngine every
message read off a socket is handed from an EventEngine thread to that completion-queue thread and
then to the event loop: a thread wake-up more per event, on each side of every call. Measured with
`hirepay_dev.bench_rpc` on the 2-core machine (a trivial unary call through the platform, c=16):
system calls per call client 16.7 -> 8.7 and server 30.2 -> 25.8 (futex 4.6 -> 0.4 client), context
switches per call client 4.9 -> 1.7 and server ~8 -> ~4.5, CPU per call ~10% lower on each side
(client 328 -> 280 us, server 550 -> 485 us, medians of 5 alternating runs; see README
"Benchmarks"). Nothing else changes: HTTP/2, keepalive, deadlines, health and shutdown are the same
chttp2 transport's. The trade-off: these experiments are gRPC's to remove (announced for after
1.80 has been out two releases); when grpcio is upgraded, tests/platform/test_grpc_core_env.py
fails if grpcio no longer knows them, and the choice is to be measured again."""

from __future__ import annotations

from collections.abc import Mapping

GRPC_CORE_ENV: Mapping[str, str] = {
    "GRPC_EXPERIMENTS": "-event_engine_client,-event_engine_listener",
}


def with_grpc_core_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` (a child process's environment) with GRPC_CORE_ENV's variables it does not set."""
    return {**GRPC_CORE_ENV, **env}
