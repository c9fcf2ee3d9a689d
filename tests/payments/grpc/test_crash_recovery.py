"""kill -9 of the payments process while a provider call is in flight: after a restart the poller
replays the stored idempotency key, so the payment reaches its final state with one PaymentIntent.
Two replicas share one database and resolve UNKNOWN payments without stepping on each other."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.services import PAYMENTS, RunningService, start_service
from tests.support.payments_helpers import (
    WEBHOOK_SECRET,
    State,
    authorize_request,
    reason,
    rpc_error,
)
from tests.support.service_auth import signed_aio_channel
from tests.support.stripe_stack import payments_env
from tests.support.waiting import wait_for

AUTH = {"Authorization": "Bearer sk_test_paymentstests"}


def _env(sandbox_url: str) -> dict[str, str]:
    env = payments_env(sandbox_url, "sk_test_paymentstests", WEBHOOK_SECRET, provider_timeout=1)
    return {**env, "PAYMENTS_WALLET_TARGET": ""}


@pytest.fixture(scope="module")
def replicas(make_service_database, sandbox_url) -> Iterator[list[RunningService]]:
    url = make_service_database("payments")
    services = [
        start_service(PAYMENTS, url, env=_env(sandbox_url), log_name=f"payments-replica-{i}")
        for i in range(2)
    ]
    yield services
    for service in services:
        service.stop()


def _intents(admin, gtx: str) -> list[dict]:
    data = admin.http.get("/v1/payment_intents", params={"limit": 100}, headers=AUTH).json()["data"]
    return [i for i in data if i.get("metadata", {}).get("global_tx_id") == gtx]


async def test_kill_during_the_provider_call_is_healed_after_restart(
    replicas, admin, unique
) -> None:
    first, second = replicas
    second.stop()  # only the victim may poll, so the restart is what heals it
    try:
        gtx = unique("gtx")
        admin.add_fault("webhook_drop", event_type="payment_intent.*")
        slow = admin.add_fault(
            "latency", ms=1500, path_prefix="/v1/payment_intents", method="POST", count=1
        )

        async def create_in_flight() -> bool:
            # The sandbox takes the latency fault once the create holds its idempotency key, so
            # the payment row and its key were committed before the call left payments.
            return all(f["id"] != slow["id"] for f in admin.faults())

        async with signed_aio_channel(first.target, caller="jobs", service="payments") as channel:
            stub = pb_grpc.PaymentsServiceStub(channel)
            call = asyncio.ensure_future(stub.Authorize(authorize_request(gtx, amount=990)))
            await wait_for(create_in_flight, timeout=30, interval=0.02)
            first.kill()
            exc = await rpc_error(call)
            assert exc.code() == grpc.StatusCode.UNAVAILABLE

        async def created_unheard() -> bool:
            # The sandbox finishes the create nobody hears about.
            return len(_intents(admin, gtx)) == 1

        await wait_for(created_unheard, timeout=30)
        assert len(_intents(admin, gtx)) == 1
        first.restart()
        async with signed_aio_channel(first.target, caller="jobs", service="payments") as channel:
            stub = pb_grpc.PaymentsServiceStub(channel)

            async def authorized():
                reply = await stub.GetPaymentByBranch(
                    pb.GetPaymentByBranchRequest(branch=authorize_request(gtx).branch)
                )
                return reply.payment if reply.payment.state == State.AUTHORIZED else None

            done = await wait_for(authorized, timeout=30)
        mine = _intents(admin, gtx)
        assert len(mine) == 1 and done.provider_payment_id == mine[0]["id"]
        assert done.amount.amount_minor == 990
    finally:
        # A failure above must not leave the next test without its replicas.
        for service in (first, second):
            if not service.process.running:
                service.restart()


async def test_two_replicas_resolve_unknown_payments_once(replicas, admin, unique) -> None:
    first, second = replicas
    gtxs = [unique("gtx") for _ in range(4)]
    admin.add_fault("webhook_drop", event_type="payment_intent.*")
    admin.add_fault(
        "timeout_after_commit", seconds=2, path_prefix="/v1/payment_intents", method="POST", count=4
    )
    async with (
        signed_aio_channel(first.target, caller="jobs", service="payments") as a,
        signed_aio_channel(second.target, caller="jobs", service="payments") as b,
    ):
        stubs = [pb_grpc.PaymentsServiceStub(a), pb_grpc.PaymentsServiceStub(b)]
        errors = await asyncio.gather(
            *(rpc_error(stubs[i % 2].Authorize(authorize_request(g))) for i, g in enumerate(gtxs))
        )
        assert {reason(e)[1] for e in errors} == {"PAYMENT_TIMEOUT"}

        async def all_authorized():
            states = []
            for g in gtxs:
                reply = await stubs[0].GetPaymentByBranch(
                    pb.GetPaymentByBranchRequest(branch=authorize_request(g).branch)
                )
                states.append(reply.payment.state)
            return all(s == State.AUTHORIZED for s in states)

        await wait_for(all_authorized, timeout=30)
    for g in gtxs:
        assert len(_intents(admin, g)) == 1
