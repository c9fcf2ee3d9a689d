"""The gateway test harness: test keys and tokens, the fake backends' handles, starting the gateway."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.service_layer.auth import issue_token
from hirepay_dev.procs import Process, free_port, http_ready, python_module
from tests.support.gateway_fakes import FakeJobs, FakePayments, FakeServer, FakeWallet

KEYS = {
    "k1": "gateway-test-key-one-0123456789abcdef",
    "k2": "gateway-test-key-two-0123456789abcdef",
}
ISSUER = "hirepay-test"
AUDIENCE = "hirepay-api"
RATE_LIMIT = 3
# The subsystem pages the tests redirect to (GATEWAY_ALLOWED_REDIRECT_ORIGINS).
REDIRECT_ORIGINS = "https://app.devision.com,https://app.example"


def token(role: str, user: str, *, kid: str = "k1", **kwargs: Any) -> str:
    """A token the test gateway accepts (unless the arguments say otherwise)."""
    kwargs.setdefault("issuer", ISSUER)
    kwargs.setdefault("audience", AUDIENCE)
    return issue_token(user_id=user, role=role, kid=kid, secret=KEYS.get(kid, "x" * 40), **kwargs)


def bearer(role: str, user: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, user, **kwargs)}"}


@dataclass
class Backends:
    jobs: FakeJobs
    payments: FakePayments
    jobs_server: FakeServer
    payments_server: FakeServer
    wallet_server: FakeServer
    wallet: FakeWallet = field(default_factory=FakeWallet)


@dataclass
class Gateway:
    url: str
    process: Process
    spans_path: Path

    def log_text(self) -> str:
        assert self.process.log_path is not None
        return self.process.log_path.read_text(errors="replace")

    def spans(self) -> list[dict[str, Any]]:
        if not self.spans_path.exists():
            return []
        return [json.loads(line) for line in self.spans_path.read_text().splitlines() if line]


def start_gateway(name: str, env: dict[str, str]) -> tuple[Process, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = Process(
        name=name,
        argv=python_module("gateway"),
        env={"GATEWAY_PORT": str(port), "GATEWAY_PUBLIC_URL": url, **env},
        ready=http_ready(f"{url}/healthz"),
    ).start(timeout=30)
    return process, url
