"""SEC-1 at the edge: bearer JWTs (HS256 only; iss, aud, exp checked; keys rotated by kid), roles,
the development key only in development, and the `make token` tool."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from hirepay_dev.procs import (
    REPO_ROOT,
    Process,
    ensure_service_token_secret,
    free_port,
    python_module,
)
from hirepay_platform.identity import ACTOR_HEADER, SECRET_ENV, SERVICE_TOKEN_HEADER
from tests.support.gateway_harness import (
    AUDIENCE,
    ISSUER,
    KEYS,
    Backends,
    bearer,
    start_gateway,
    token,
)

PROTECTED = "/api/jobs/mine"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "company-a",
        "role": "company",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    payload: dict[str, Any], *, kid: str = "k1", alg: str = "HS256", secret: str | None = None
) -> str:
    return jwt.encode(payload, secret or KEYS[kid], algorithm=alg, headers={"kid": kid})


def unsigned(payload: dict[str, Any], kid: str = "k1") -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64(payload)}."


async def test_missing_token_is_401_with_a_bearer_challenge(client: httpx.AsyncClient) -> None:
    resp = await client.get(PROTECTED)
    assert resp.status_code == 401
    assert resp.json()["error"] == "UNAUTHENTICATED"
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="hirepay"'


@pytest.mark.parametrize(
    ("make_token", "problem"),
    [
        (lambda: sign(claims(exp=int(time.time()) - 120)), "token expired"),
        (lambda: sign(claims(aud="someone-else")), "wrong audience"),
        (lambda: sign(claims(iss="https://evil.example")), "wrong issuer"),
        (lambda: sign(claims(exp=None)), "missing claim exp"),
        (lambda: sign(claims(aud=None)), "missing claim aud"),
        (lambda: sign(claims(iss=None)), "missing claim iss"),
        (lambda: sign(claims(role="superuser")), "unknown role"),
        (lambda: sign(claims(role=None)), "unknown role"),
        (
            lambda: sign(claims(), kid="k9", secret="k9-secret-0123456789abcdefghijklmn"),
            "unknown key id",
        ),
        (
            lambda: sign(claims(), secret="not-the-key-0123456789abcdefghijklmnop"),
            "signature or claims invalid",
        ),
        (lambda: sign(claims(), alg="HS512", secret="k" * 64), "algorithm not allowed"),
        (lambda: unsigned(claims()), "algorithm not allowed"),
        (lambda: "not.a.jwt", "malformed token"),
    ],
)
async def test_bad_tokens_are_401(client: httpx.AsyncClient, make_token: Any, problem: str) -> None:
    resp = await client.get(PROTECTED, headers={"Authorization": f"Bearer {make_token()}"})
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "UNAUTHENTICATED"
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="hirepay", error="invalid_token"')
    assert problem in challenge


async def test_non_bearer_scheme_is_401(client: httpx.AsyncClient) -> None:
    resp = await client.get(PROTECTED, headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    assert resp.status_code == 401


async def test_both_rotation_keys_are_accepted(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    for kid in ("k1", "k2"):
        resp = await client.get(PROTECTED, headers=bearer("company", "company-rot", kid=kid))
        assert resp.status_code == 200, resp.text
    actors = [c.request.actor for c in backends.jobs.calls_to("ListMyJobs")]
    assert [(a.user_id, a.role) for a in actors] == [("company-rot", "company")] * 2


async def test_backend_calls_carry_the_gateway_signed_actor_of_a_signed_in_user(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    """Issue 12 §3: the services trust the actor assertion the gateway signs, not request fields."""
    resp = await client.get(PROTECTED, headers=bearer("company", "company-signed"))
    assert resp.status_code == 200, resp.text
    [call] = backends.jobs.calls_to("ListMyJobs")
    assert SERVICE_TOKEN_HEADER in call.metadata
    actor = jwt.decode(call.metadata[ACTOR_HEADER], options={"verify_signature": False})
    assert (actor["iss"], actor["aud"], actor["sub"], actor["role"], actor["typ"]) == (
        "gateway",
        "jobs",
        "company-signed",
        "company",
        "actor",
    )
    assert actor["exp"] - actor["iat"] <= 60
    # An anonymous request is signed as the gateway, with no actor at all.
    assert (await client.get("/api/jobs")).status_code == 200
    [anonymous] = backends.jobs.calls_to("ListActiveJobs")
    assert SERVICE_TOKEN_HEADER in anonymous.metadata
    assert ACTOR_HEADER not in anonymous.metadata


async def test_development_key_is_refused_outside_development(client: httpx.AsyncClient) -> None:
    from gateway.service_layer.auth import issue_token  # signs with the development key by default

    dev = issue_token(user_id="company-a", role="company", issuer=ISSUER, audience=AUDIENCE)
    resp = await client.get(PROTECTED, headers={"Authorization": f"Bearer {dev}"})
    assert resp.status_code == 401


async def test_wrong_role_is_403(client: httpx.AsyncClient, backends: Backends) -> None:
    for method, url in (
        ("POST", "/api/jobs/drafts"),
        ("GET", "/api/jobs/mine"),
        ("GET", "/api/jobs/job_1/preview"),
        ("POST", "/api/jobs/job_1/cancel"),
    ):
        resp = await client.request(method, url, json={}, headers=bearer("applicant", "app-1"))
        assert resp.status_code == 403, (url, resp.text)
        assert resp.json()["error"] == "FORBIDDEN"
    assert backends.jobs.calls == []


async def test_anonymous_may_read_only_the_public_list(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    assert (await client.get("/api/jobs")).status_code == 200
    for method, url in (
        ("POST", "/api/jobs/drafts"),
        ("GET", "/api/jobs/mine"),
        ("POST", "/api/payments/subscribe"),
        ("GET", "/api/payments/verify/txn_1"),
        ("GET", "/api/jobs/job_1/transitions"),
    ):
        resp = await client.request(method, url, json={})
        assert resp.status_code == 401, url


def test_production_without_keys_fails_fast() -> None:
    port = free_port()
    result = subprocess.run(
        python_module("gateway"),
        env={
            "PATH": "/usr/bin:/bin",
            "GATEWAY_ENV": "production",
            "GATEWAY_PORT": str(port),
            SECRET_ENV: ensure_service_token_secret(),
        },
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "GATEWAY_JWT_KEYS is required" in result.stderr


def test_without_the_service_token_secret_the_gateway_fails_fast() -> None:
    """Issue 12 §3: no built-in service-token secret in any mode; a short one is refused too."""
    for secret in (None, "too-short"):
        result = subprocess.run(
            python_module("gateway"),
            env={
                "PATH": "/usr/bin:/bin",
                "GATEWAY_ENV": "production",
                "GATEWAY_JWT_KEYS": json.dumps(KEYS),
                **({SECRET_ENV: secret} if secret else {}),
            },
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2
        assert SECRET_ENV in result.stderr


def test_short_keys_are_refused() -> None:
    result = subprocess.run(
        python_module("gateway"),
        env={
            "PATH": "/usr/bin:/bin",
            "GATEWAY_JWT_KEYS": '{"k": "short"}',
            SECRET_ENV: ensure_service_token_secret(),
        },
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "at least 32 bytes" in result.stderr


@pytest.fixture(scope="module")
def dev_gateway(backends: Backends) -> Iterator[tuple[Process, str]]:
    """A gateway with the defaults `make run` uses (development key), its wallet unreachable."""
    process, url = start_gateway(
        "gateway-tests-dev",
        {
            "GATEWAY_JOBS_TARGET": backends.jobs_server.target,
            "GATEWAY_PAYMENTS_TARGET": backends.payments_server.target,
            "GATEWAY_WALLET_TARGET": f"127.0.0.1:{free_port()}",
        },
    )
    yield process, url
    process.stop()


@pytest.fixture
def minted_dev_token() -> str:
    """What `make token ROLE=company USER=company-dev` prints."""
    return subprocess.run(
        python_module(
            "hirepay_dev.token",
            "--role",
            "company",
            "--user",
            "company-dev",
            "--email",
            "dev@example.com",
        ),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()


async def test_make_token_mints_what_the_development_gateway_accepts(
    dev_gateway: tuple[Process, str], backends: Backends, minted_dev_token: str
) -> None:
    _, url = dev_gateway
    minted = minted_dev_token
    header = jwt.get_unverified_header(minted)
    assert header["alg"] == "HS256"
    assert header["kid"] == "dev-only"
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        resp = await http.get(PROTECTED, headers={"Authorization": f"Bearer {minted}"})
        assert resp.status_code == 200, resp.text
        # A token signed by the test keys is not valid here.
        assert (await http.get(PROTECTED, headers=bearer("company", "x"))).status_code == 401
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["down"] == ["wallet"]
    [call] = backends.jobs.calls_to("ListMyJobs")
    assert call.request.actor.user_id == "company-dev"


def test_token_tool_refuses_unknown_roles() -> None:
    result = subprocess.run(
        python_module("hirepay_dev.token", "--role", "root", "--user", "u"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "invalid choice" in result.stderr


def test_issued_tokens_carry_the_expected_claims() -> None:
    decoded = jwt.decode(
        token("company", "c-9", email="c9@example.com", ttl_seconds=60),
        KEYS["k1"],
        algorithms=["HS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
    )
    assert decoded["sub"] == "c-9"
    assert decoded["role"] == "company"
    assert decoded["email"] == "c9@example.com"
    assert decoded["exp"] - decoded["iat"] == 60
