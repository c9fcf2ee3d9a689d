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
`hirepay_dev.bench_rpc --grpc-core platform|grpc` on the shared 2-core machine (a trivial unary call
through the platform, five alternating pairs, medians): at c=16 CPU per call client 349 -> 281 us
and server 558 -> 482 us, wake-ups (voluntary context switches) per call client 4.8 -> 1.8 and
server 9.4 -> 5.2, system calls per call client 16.7 -> 8.7 and server 30.2 -> 25.8 (strace -c);
at c=1 the same and a round trip ~0.85 -> ~0.68 ms. Nothing else changes: HTTP/2, keepalive,
deadlines, health and shutdown are the same chttp2 transport's, and the listener still binds with
SO_REUSEADDR. The trade-offs: a process's gRPC I/O is done by that one thread, not spread over
EventEngine threads beside the event loop's, so where a process has a core to itself its peak
calls/s can be lower (the micro-benchmark's two processes on two cores at c=16: ~1400 against
~1600 calls/s) while each call costs less CPU; Hirepay's processes share their cores, where CPU
per call is what counts. And these experiments are gRPC's to remove (announced once 1.80 has been
out two releases): when grpcio is upgraded, tests/platform/test_rpc_core_env.py fails if grpcio
no longer knows them, and the choice is to be measured again."""

from __future__ import annotations

from collections.abc import Mapping

GRPC_CORE_ENV: Mapping[str, str] = {
    "GRPC_EXPERIMENTS": "-event_engine_client,-event_engine_listener",
}


def with_grpc_core_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` (a child process's environment) with GRPC_CORE_ENV's variables it does not set."""
    return {**GRPC_CORE_ENV, **env}
