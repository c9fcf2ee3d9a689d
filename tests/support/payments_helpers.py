"""Helpers shared by the payments tests: request builders, error details and polling."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay_platform.grpc_status import error_info
from hirepay_platform.tcc import TccBranch
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands
from payments.domain.credits import CreditGrant
from payments.domain.model import Method, Payment, PaymentState, PendingOp
from payments.domain.transactions import Transaction, TxnStatus, UserType
from tests.support.waiting import wait_for

# Webhook signing secrets: the sandbox signs with the current one; both are accepted (rotation).
WEBHOOK_SECRET = "whsec_paymentstestcurrent000000000000"
OLD_WEBHOOK_SECRET = "whsec_paymentstestprevious00000000000"

CARD = pb.PAYMENT_METHOD_TYPE_CARD
BANK = pb.PAYMENT_METHOD_TYPE_BANK_TRANSFER
CHECKOUT = pb.PAYMENT_METHOD_TYPE_CHECKOUT
State = pb.Payment.State


def branch(gtx: str, branch_id: str = "payment") -> common_pb2.TccBranch:
    return common_pb2.TccBranch(global_tx_id=gtx, branch_id=branch_id)


def authorize_request(
    gtx: str,
    *,
    amount: int = 2500,
    currency: str = "USD",
    token: str = "pm_card_visa",
    method: int = CARD,
    **extra: Any,
) -> pb.AuthorizeRequest:
    return pb.AuthorizeRequest(
        request_id=f"req-{gtx}",
        branch=branch(gtx),
        owner_id="company-1",
        amount=common_pb2.Money(amount_minor=amount, currency=currency),
        method=method,  # type: ignore[arg-type]
        payment_method_token=token,
        description="Job posting fee",
        metadata={"job_id": f"job-{gtx}", "subsystem": "jobs"},
        **extra,
    )


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """Await a call that must fail; return its error."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded but an error was expected")


def reason(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    info = error_info(exc)
    assert info is not None, f"no ErrorInfo on {exc.code()}: {exc.details()}"
    return exc.code(), info.reason, dict(info.metadata)


def authorize_command(gtx: str, **changes: Any) -> commands.Authorize:
    """A $25.00 card Authorize of owner "company-1" for a job post, the branch "payment" of the
    global transaction `gtx`; `changes` set any other field."""
    fields: dict[str, Any] = {
        "request_id": f"r-{gtx}",
        "branch": TccBranch(gtx, "payment"),
        "owner_id": "company-1",
        "amount_minor": 2500,
        "currency": "USD",
        "method": Method.CARD,
        "payment_method_token": "pm_card_visa",
        "metadata": {"subsystem": "jobs", "job_id": "job-1"},
        "description": "a job post",
        "email": "owner@example.com",
    }
    return commands.Authorize(**{**fields, **changes})


def card_payment(
    pid: str,
    gtx: str,
    *,
    state: PaymentState = PaymentState.UNKNOWN,
    pending_op: PendingOp | None = PendingOp.AUTHORIZE,
    at: datetime | None = None,
    **changes: Any,
) -> Payment:
    """A $1.00 card payment of owner "o" through Stripe, as the domain holds it (by default one
    whose authorization is under way); `changes` set any other field."""
    now = at or datetime.now(UTC)
    fields: dict[str, Any] = {
        "id": pid,
        "branch": TccBranch(gtx, "payment"),
        "owner_id": "o",
        "amount_minor": 100,
        "currency": "USD",
        "method": Method.CARD,
        "provider": "stripe",
        "state": state,
        "created_at": now,
        "updated_at": now,
        "pending_op": pending_op,
        "metadata": {"subsystem": "jobs"},
    }
    return Payment(**{**fields, **changes})


async def owe_card_bookings(
    sessions: async_sessionmaker[AsyncSession], prefix: str, ids: Iterator[int], n: int
) -> list[CreditGrant]:
    """The bookings `n` captured card payments owe the ledger (ids `pay_<prefix><i>` from
    `ids`), recorded in one unit of work, due now."""
    now = datetime.now(UTC)
    grants = []
    for _ in range(n):
        i = next(ids)
        payment = card_payment(
            f"pay_{prefix}{i}",
            f"gtx_{prefix}{i}",
            state=PaymentState.CAPTURED,
            pending_op=None,
            captured_minor=100,
        )
        grant = CreditGrant.capture(payment, now)
        assert grant is not None
        grants.append(grant)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        for grant in grants:
            await uow.credit_grants.owe(grant)
        await uow.commit()
    return grants


def paid_plan_transaction(txn_id: str) -> Transaction:
    """A company's paid SWIFT_HIRE plan transaction granting credits (the booking worker's input)."""
    now = datetime.now(UTC)
    return Transaction(
        id=txn_id,
        status=TxnStatus.SUCCESS,
        user_type=UserType.COMPANY,
        user_id="co-1",
        email="hr@co.test",
        amount_minor=4900,
        currency="USD",
        payment_method="STRIPE",
        provider="stripe",
        plan="SWIFT_HIRE",
        period_days=30,
        request_id=f"r-{txn_id}",
        return_url="https://a.example/ok",
        cancel_url="https://a.example/no",
        created_at=now,
        updated_at=now,
        metadata={"job_credits": "2500", "candidate_credits": "50"},
    )


async def until_streamed(connection: Any, events: int) -> None:
    """Wait until the settlement stream shows all `events` written on `connection` (asyncpg).

    The stream shows an event once every transaction begun before its writer's has ended, and
    transaction ids are the whole server's: another session's transaction still running (the
    next test database being copied from its template, say) holds the events back for a while.
    Tests that count a read's work wait for this first, outside the transaction they count."""

    async def all_shown() -> bool:
        shown = await connection.fetchval("SELECT count(*) FROM outbox_after(0, $1, '')", events)
        return bool(shown == events)

    await wait_for(all_shown)
