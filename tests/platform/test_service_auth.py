"""Issue 12 §3: the platform interceptor authenticates every caller (signed service token, the
gateway's signed actor assertion, the service's access policy) before any servicer runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_dev.procs import ensure_service_token_secret, free_port
from hirepay_platform import identity
from hirepay_platform.identity import ACTOR_HEADER, SERVICE_TOKEN_HEADER, AccessPolicy, Actor
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import ServiceSettings, load_settings
from tests.support.service_auth import call_metadata, minter

OTHER_SECRET = "a-different-deployment-secret-0123456789abcdef"


class _Settings(ServiceSettings):
    pass


class CallerEcho(pb_grpc.WalletServiceServicer):
    """Answers who the interceptor says is calling; counts the calls that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    async def GetAccount(self, request, context):
        self.calls += 1
        caller = identity.current_caller()
        actor = caller.actor
        return pb.GetAccountResponse(
            account=pb.Account(
                account_id=caller.service,
                owner_id=f"{actor.user_id}:{actor.role}" if actor else "",
            )
        )

    async def Transfer(self, request, context):
        self.calls += 1
        return pb.TransferResponse()


@pytest.fixture
async def served() -> AsyncIterator[tuple[CallerEcho, str]]:
    settings = _Settings(
        grpc_port=free_port(),
        metrics_port=free_port(),
        database_url="postgresql://unused",
        shutdown_grace_seconds=1,
    )
    app = GrpcApp("wallet", settings, AccessPolicy.of({"jobs", "gateway"}, {"Transfer": {"jobs"}}))
    servicer = CallerEcho()
    app.add_service(
        pb_grpc.add_WalletServiceServicer_to_server, servicer, "hirepay.wallet.v1.WalletService"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    for _ in range(200):
        if app.port:
            break
        await asyncio.sleep(0.02)
    yield servicer, f"127.0.0.1:{settings.grpc_port}"
    stop.set()
    await task


async def _get(target: str, metadata: list[tuple[str, str]]) -> pb.GetAccountResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.WalletServiceStub(channel)
        return await stub.GetAccount(
            pb.GetAccountRequest(account_id="a"), metadata=metadata, timeout=5
        )


async def _refused(target: str, metadata: list[tuple[str, str]]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _get(target, metadata)
    return caught.value


async def test_a_call_without_a_service_token_is_unauthenticated_before_the_servicer(
    served,
) -> None:
    servicer, target = served
    error = await _refused(target, [])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.calls == 0


async def test_a_forged_token_is_unauthenticated(served) -> None:
    servicer, target = served
    error = await _refused(target, call_metadata("jobs", "wallet", secret=OTHER_SECRET))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.calls == 0


async def test_an_expired_token_is_unauthenticated(served) -> None:
    servicer, target = served
    stale = minter("jobs").service_token("wallet", now=time.time() - 3600)
    error = await _refused(target, [(SERVICE_TOKEN_HEADER, stale)])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.calls == 0


async def test_a_token_for_another_service_is_unauthenticated(served) -> None:
    _, target = served
    error = await _refused(target, call_metadata("jobs", "payments"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_living_too_long_is_unauthenticated(served) -> None:
    _, target = served
    signer = identity.TokenMinter("jobs", ensure_service_token_secret(), ttl=24 * 3600)
    error = await _refused(target, [(SERVICE_TOKEN_HEADER, signer.service_token("wallet"))])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_valid_token_reaches_the_servicer_with_the_verified_caller(served) -> None:
    servicer, target = served
    reply = await _get(target, call_metadata("jobs", "wallet"))
    assert reply.account.account_id == "jobs"
    assert reply.account.owner_id == ""
    assert servicer.calls == 1


async def test_a_caller_not_allowed_for_the_rpc_is_permission_denied(served) -> None:
    servicer, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.WalletServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Transfer(
                pb.TransferRequest(request_id="t"),
                metadata=call_metadata("gateway", "wallet"),
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # An unknown service is no better.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetAccount(
                pb.GetAccountRequest(account_id="a"),
                metadata=call_metadata("mallory", "wallet"),
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert servicer.calls == 0


async def test_the_gateway_actor_assertion_reaches_the_servicer(served) -> None:
    _, target = served
    reply = await _get(target, call_metadata("gateway", "wallet", Actor("acme-1", "company")))
    assert reply.account.account_id == "gateway"
    assert reply.account.owner_id == "acme-1:company"


async def test_a_forged_actor_assertion_is_unauthenticated(served) -> None:
    servicer, target = served
    forged = identity.TokenMinter("gateway", OTHER_SECRET).actor_assertion(
        "wallet", Actor("someone", "admin")
    )
    metadata = [*call_metadata("gateway", "wallet"), (ACTOR_HEADER, forged)]
    error = await _refused(target, metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.calls == 0


async def test_a_service_token_cannot_pass_as_an_actor_assertion(served) -> None:
    _, target = served
    service_token = minter("gateway").service_token("wallet")
    metadata = [*call_metadata("gateway", "wallet"), (ACTOR_HEADER, service_token)]
    error = await _refused(target, metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_only_the_gateway_vouches_for_an_end_user(served) -> None:
    _, target = served
    error = await _refused(target, call_metadata("jobs", "wallet", Actor("root", "admin")))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_needs_no_token(served) -> None:
    _, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_service_without_the_secret_refuses_to_start(monkeypatch, capsys) -> None:
    monkeypatch.setenv("WALLET_GRPC_PORT", "1")
    monkeypatch.setenv("WALLET_METRICS_PORT", "2")
    monkeypatch.setenv("WALLET_DATABASE_URL", "postgresql://unused")

    class WalletLike(ServiceSettings):
        model_config = {**ServiceSettings.model_config, "env_prefix": "WALLET_"}

    monkeypatch.delenv(identity.SECRET_ENV)
    with pytest.raises(SystemExit):
        load_settings(WalletLike)
    assert "HIREPAY_SERVICE_TOKEN_SECRET" in capsys.readouterr().err
    monkeypatch.setenv(identity.SECRET_ENV, "too-short")
    with pytest.raises(SystemExit):
        load_settings(WalletLike)
    assert "at least 32 bytes" in capsys.readouterr().err


# Issue 13: signing and verifying are cached. These check that a cache changes nothing a caller
# or a callee can observe: expiry still holds, and a token never speaks for another user.


class _Clock:
    """A wall clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _authenticator(clock: _Clock) -> identity.ServiceAuthenticator:
    return identity.ServiceAuthenticator(
        "wallet", ensure_service_token_secret(), AccessPolicy.of({"gateway"}), clock=clock
    )


def _edge(clock: _Clock) -> identity.TokenMinter:
    return identity.TokenMinter("gateway", ensure_service_token_secret(), clock=clock)


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    clock = _Clock()
    server = _authenticator(clock)
    metadata = _edge(clock).metadata("wallet", Actor("acme-1", "company"))
    assert server.authenticate(metadata, "GetAccount").user == Actor("acme-1", "company")
    # Still good up to the last second of its life plus the leeway...
    clock.now += identity.TOKEN_TTL_SECONDS - 1
    assert server.authenticate(metadata, "GetAccount").user.user_id == "acme-1"
    # ...and refused after it, although it was verified (and remembered) before.
    clock.now += 1 + identity.LEEWAY_SECONDS
    with pytest.raises(identity.Unauthenticated, match="expired"):
        server.authenticate(metadata, "GetAccount")
    # The actor assertion alone, with a fresh service token, is refused just the same.
    fresh = identity.TokenMinter("gateway", ensure_service_token_secret(), ttl=300).service_token(
        "wallet"
    )
    assert server.authenticate([(SERVICE_TOKEN_HEADER, fresh)], "GetAccount").actor is None
    with pytest.raises(identity.Unauthenticated, match="actor token"):
        server.authenticate([(SERVICE_TOKEN_HEADER, fresh), metadata[1]], "GetAccount")


def test_a_remembered_token_still_needs_the_policy_and_its_exact_bytes() -> None:
    clock = _Clock()
    server = _authenticator(clock)
    token = minter("gateway").service_token("wallet")
    assert server.authenticate([(SERVICE_TOKEN_HEADER, token)], "GetAccount").service == "gateway"
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(identity.Unauthenticated):
        server.authenticate([(SERVICE_TOKEN_HEADER, tampered)], "GetAccount")
    # A service token remembered as such never passes as an actor assertion.
    with pytest.raises(identity.Unauthenticated, match="actor token"):
        server.authenticate([(SERVICE_TOKEN_HEADER, token), (ACTOR_HEADER, token)], "GetAccount")
    # The access policy is checked on every call, remembered token or not.
    strict = identity.ServiceAuthenticator(
        "wallet",
        ensure_service_token_secret(),
        AccessPolicy.of({"gateway"}, {"Transfer": {"jobs"}}),
        clock=clock,
    )
    assert strict.authenticate([(SERVICE_TOKEN_HEADER, token)], "GetAccount").service == "gateway"
    with pytest.raises(identity.CallerNotAllowed):
        strict.authenticate([(SERVICE_TOKEN_HEADER, token)], "Transfer")


def test_an_assertion_is_reused_only_for_its_own_user_role_and_audience() -> None:
    clock = _Clock()
    edge = _edge(clock)
    server = _authenticator(clock)
    alice, bob = Actor("alice", "company"), Actor("bob", "company")
    first = edge.actor_assertion("wallet", alice)
    assert edge.actor_assertion("wallet", alice) == first
    assert edge.actor_assertion("wallet", bob) != first
    assert edge.actor_assertion("wallet", Actor("alice", "admin")) != first
    assert edge.actor_assertion("payments", alice) != first
    # Each user's calls are verified as that user, whatever was verified (and remembered) before.
    for who in (alice, bob, alice, Actor("alice", "admin"), bob):
        caller = server.authenticate(edge.metadata("wallet", who), "GetAccount")
        assert caller.user == who


def test_a_reused_token_always_has_half_its_life_left() -> None:
    clock = _Clock()
    edge = _edge(clock)
    alice = Actor("alice", "company")
    seen: set[str] = set()
    for _ in range(4 * identity.TOKEN_TTL_SECONDS):
        metadata = edge.metadata("wallet", alice)
        for _, token in metadata:
            seen.add(token)
            claims = jwt.decode(token, options={"verify_signature": False})
            # Every token handed out, reused or not, has at least half its TTL left when sent.
            assert claims["exp"] - clock.now >= identity.TOKEN_TTL_SECONDS / 2
        clock.now += 1
    # Renewed along the way (about twice per TTL for each token type), not minted per call.
    assert 8 <= len(seen) <= 24


def test_the_caller_of_a_verified_token_is_made_once_and_never_another_callers() -> None:
    """Callers are remembered (issue 13): the same service, or the same user and role through
    the gateway, is handed the very same immutable Caller on every call; any other service,
    user or role gets its own."""
    clock = _Clock()
    edge = _edge(clock)
    server = identity.ServiceAuthenticator("wallet", ensure_service_token_secret(), clock=clock)
    alone = [(SERVICE_TOKEN_HEADER, edge.service_token("wallet"))]
    jobs = [(SERVICE_TOKEN_HEADER, minter("jobs").service_token("wallet"))]
    assert server.authenticate(alone, "GetAccount") is server.authenticate(alone, "Transfer")
    assert server.authenticate(alone, "GetAccount") == identity.Caller("gateway")
    assert server.authenticate(jobs, "GetAccount") == identity.Caller("jobs")
    alice, bob = Actor("alice", "company"), Actor("bob", "company")
    for who in (alice, bob, Actor("alice", "admin")):
        first = server.authenticate(edge.metadata("wallet", who), "GetAccount")
        assert first == identity.Caller("gateway", who)
        assert server.authenticate(edge.metadata("wallet", who), "GetAccount") is first
    assert server.authenticate(alone, "GetAccount").actor is None
