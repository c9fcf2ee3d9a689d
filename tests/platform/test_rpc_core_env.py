"""gRPC's core settings (hirepay_platform.grpccore) reach every process of the project: the
launcher gives them to each child it starts (make run, the tests, the benchmarks), the image to
every Deployment, no manifest sets others; and the pinned grpcio still honours them: with them a
process does its gRPC socket I/O on grpc.aio's own completion-queue thread, its EventEngine
threads idle, and grpc reports no unknown experiment (it would after an upgrade that removed
them, and the choice would have to be measured again)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hirepay_dev import procs
from hirepay_platform.grpccore import GRPC_CORE_ENV, with_grpc_core_env

REPO = Path(__file__).resolve().parents[2]

# A process that serves and calls 400 trivial RPCs, then prints the voluntary context switches
# per call of its EventEngine threads (gRPC names them "event_engine").
_PROBE = """
import asyncio, os
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

def engine_switches():
    total = 0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as comm:
            if comm.read().strip() != "event_engine":
                continue
        with open(f"/proc/self/task/{task}/status") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[-1])
    return total

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    before = engine_switches()
    for _ in range(400):
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    print((engine_switches() - before) / 400)
    await channel.close()
    await server.stop(None)

asyncio.run(main())
"""


def _probe(env: dict[str, str]) -> tuple[float, str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1]), done.stderr


def test_the_launcher_gives_every_child_the_core_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in GRPC_CORE_ENV:
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "env.txt"
    names = list(GRPC_CORE_ENV)
    script = (
        f"import os; open({str(out)!r}, 'w').write(repr([os.environ.get(n) for n in {names!r}]))"
    )
    process = procs.Process(name="core-env-probe", argv=[sys.executable, "-c", script]).start(60)
    assert process.popen is not None
    assert process.popen.wait(60) == 0
    assert out.read_text() == repr([GRPC_CORE_ENV[n] for n in names])


def test_a_value_already_set_wins() -> None:
    name = next(iter(GRPC_CORE_ENV))
    assert with_grpc_core_env({name: "x", "OTHER": "y"}) == {
        **GRPC_CORE_ENV,
        name: "x",
        "OTHER": "y",
    }


def test_the_image_sets_the_same_values() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.index("AS runtime") :]
    for name, value in GRPC_CORE_ENV.items():
        assert re.search(rf"^ENV {name}={re.escape(value)}$", runtime, re.M), name


def test_no_manifest_sets_other_values() -> None:
    for manifest in (REPO / "deploy" / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(manifest.read_text()):
            if not doc:
                continue
            data = doc.get("data") or {}
            for name in GRPC_CORE_ENV:
                assert name not in data, f"{manifest.name} sets {name}"
            text = yaml.safe_dump(doc)
            for name in GRPC_CORE_ENV:
                assert f"name: {name}" not in text, f"{manifest.name} sets {name}"


def test_grpc_honours_the_core_settings() -> None:
    env = with_grpc_core_env({k: v for k, v in os.environ.items() if k not in GRPC_CORE_ENV})
    per_call, stderr = _probe(env)
    assert "Unknown experiment" not in stderr
    # EventEngine threads woken ~6 times a call when they do the I/O; with the settings they idle.
    assert per_call < 1.0, per_call
