"""The consistency auditor (OPS-3) over the whole running system: 0 violations after normal flows
and faults, and each kind of violation injected straight into a database or the provider is
reported by check, with the offending id, in the gRPC report and in the metric."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import httpx
import pytest

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.payments.v1 import payments_service_pb2_grpc as ppb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev.pg import libpq_url
from hirepay_dev.sandbox_client import stripe_client
from hirepay_dev.stack import DEV_STRIPE_KEY
from tests.e2e.conftest import System, job_fields, new_company
from tests.support.service_auth import signed_channel
from tests.support.waiting import eventually

ADMIN = common_pb2.Actor(user_id="ops-1", role="admin")


def report(system: System) -> pb.ConsistencyReport:
    with signed_channel(
        system.stack.services["jobs"].target, caller="gateway", service="jobs"
    ) as channel:
        stub = pb_grpc.JobsServiceStub(channel)
        return stub.GetConsistencyReport(pb.GetConsistencyReportRequest(actor=ADMIN), timeout=60)


def metric(system: System, check: str) -> float:
    jobs = system.stack.services["jobs"]
    text = httpx.get(f"http://127.0.0.1:{jobs.metrics_port}/metrics", timeout=10).text
    line = f'hirepay_consistency_violations{{check="{check}"}} '
    values = [float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)]
    assert values, f"{check} not exported"
    return values[0]


def post_card(system: System, company: str, key: str, status: tuple[int, ...] = (201,)) -> dict:
    response = system.http.post(
        "/api/jobs/create-with-payment",
        json={
            "job": job_fields(),
            "payment": {"method": "card", "payment_method": "pm_card_visa"},
            "accept_terms": True,
        },
        headers=system.headers(company, key=key),
    )
    assert response.status_code in status, response.text
    return response.json()


def _sql(url: str, statement: str, *params: object, past_triggers: bool = False) -> None:
    """Run one statement straight on a service's database (the injected fault); `past_triggers`
    bypasses the database's own guards (the wallet's zero-sum trigger) as replication does."""

    async def run() -> None:
        conn = await asyncpg.connect(libpq_url(url))
        try:
            async with conn.transaction():
                if past_triggers:
                    await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute(statement, *params)
        finally:
            await conn.close()

    asyncio.run(run())


def test_only_admins_read_the_report(system: System) -> None:
    with signed_channel(
        system.stack.services["jobs"].target, caller="gateway", service="jobs"
    ) as channel:
        stub = pb_grpc.JobsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetConsistencyReport(
                pb.GetConsistencyReportRequest(
                    actor=common_pb2.Actor(user_id="co-1", role="company")
                ),
                timeout=10,
            )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_no_violation_after_normal_flows_and_faults(system: System) -> None:
    system.admin.clear_faults()  # no fault another test left armed
    company = new_company()
    post_card(system, company, "ok-1")
    declined = system.http.post(
        "/api/jobs/create-with-payment",
        json={
            "job": job_fields(),
            "payment": {"method": "card", "payment_method": "pm_card_chargeDeclined"},
            "accept_terms": True,
        },
        headers=system.headers(company, key="declined-1"),
    )
    assert declined.status_code == 402
    system.admin.add_fault(
        "error", status=503, count=1, path_prefix="/v1/payment_intents/*/capture"
    )
    # A 503 on the capture: retried (by the client, or the saga: then 202 pending_payment and
    # not listed meanwhile); live once captured (§1).
    posted = post_card(system, company, "ok-2", status=(201, 202))["job"]
    if posted["status"] == "pending_payment":
        assert posted["payment_status"] == "pending"
    eventually(lambda: system.job(company, posted["id"])["status"] == "active", timeout=30)

    def clean() -> pb.ConsistencyReport:
        got = report(system)
        assert not got.violations, got.violations
        return got

    got = eventually(clean, timeout=30)
    assert set(got.counts) >= {
        "active_job_without_payment",
        "captured_payment_without_job",
        "payment_past_deadline",
        "unbalanced_transaction",
        "balance_limit_breach",
        "expired_hold_unreleased",
        "provider_mismatch",
    }
    assert metric(system, "active_job_without_payment") == 0


def test_each_injected_violation_is_reported(system: System) -> None:
    system.admin.clear_faults()  # no fault another test left armed
    company = new_company()
    live = post_card(system, company, "live-1")["job"]["id"]
    jobs_db = system.stack.services["jobs"].database_url
    wallet_db = system.stack.services["wallet"].database_url
    # 1. A live job whose payment is not completed (as the incident's 17 jobs were).
    _sql(jobs_db, "UPDATE jobs SET payment_status = 'pending' WHERE id = $1", live)
    # 2. A ledger transfer whose entries do not sum to zero.
    transfer = f"audit-{uuid.uuid4().hex[:8]}"
    _sql(
        wallet_db,
        "INSERT INTO transfers (id, kind, fingerprint) VALUES ($1, 'transfer', '{}'::jsonb)",
        transfer,
    )
    with signed_channel(
        system.stack.services["wallet"].target, caller="jobs", service="wallet"
    ) as channel:
        account = (
            wpb_grpc.WalletServiceStub(channel)
            .OpenAccount(
                wpb.OpenAccountRequest(
                    request_id=f"open-{transfer}",
                    owner_id=company,
                    currency="USD",
                    kind=wpb.ACCOUNT_KIND_USER,
                ),
                timeout=10,
            )
            .account.account_id
        )
    _sql(
        wallet_db,
        "INSERT INTO entries (transfer_id, account_id, unit, amount)"
        " VALUES ($1, CAST($2 AS uuid), 'USD', 7)",
        transfer,
        account,
        past_triggers=True,
    )
    # 3. Money the provider took behind payments' back (reconciliation through the provider).
    with signed_channel(
        system.stack.services["payments"].target, caller="jobs", service="payments"
    ) as channel:
        payments = ppb_grpc.PaymentsServiceStub(channel)
        authorized = payments.Authorize(
            ppb.AuthorizeRequest(
                request_id=f"audit-{transfer}",
                branch=common_pb2.TccBranch(global_tx_id=transfer, branch_id="payment"),
                owner_id=company,
                amount=common_pb2.Money(amount_minor=1000, currency="USD"),
                method=ppb.PAYMENT_METHOD_TYPE_CARD,
                payment_method_token="pm_card_visa",
                metadata={"subsystem": "audit-test"},
            ),
            timeout=30,
        ).payment
        # Wait until payments knows it authorized (a slow provider may leave it UNKNOWN a moment).
        authorized = eventually(
            lambda: (
                got
                if (
                    got := payments.GetPayment(
                        ppb.GetPaymentRequest(payment_id=authorized.payment_id), timeout=10
                    ).payment
                ).state
                == ppb.Payment.AUTHORIZED
                else None
            ),
            timeout=30,
        )
    client = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    system.admin.add_fault("webhook_drop")  # and its webhook lost: payments never hears of it
    try:
        client.v1.payment_intents.capture(authorized.provider_payment_id)
    finally:
        system.admin.clear_faults()

    def reported() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for v in report(system).violations:
            found.setdefault(v.check, set()).add(v.subject_id)
        assert live in found.get("active_job_without_payment", set()), found
        assert transfer in found.get("unbalanced_transaction", set()), found
        assert authorized.payment_id in found.get("provider_mismatch", set()), found
        return found

    eventually(reported, timeout=30)
    # The admin HTTP endpoint names the same offenders (and is for admins only).
    http = system.http.get("/api/admin/consistency", headers=system.headers("ops-1", "admin"))
    assert http.status_code == 200, http.text
    named = {(v["check"], v["subjectId"]) for v in http.json()["violations"]}
    assert ("active_job_without_payment", live) in named
    assert ("unbalanced_transaction", transfer) in named
    assert http.json()["counts"]["active_job_without_payment"] >= 1
    refused = system.http.get("/api/admin/consistency", headers=system.headers(company))
    assert refused.status_code == 403
    eventually(lambda: metric(system, "active_job_without_payment") >= 1, timeout=30)
    # Repaired: the job's payment completed again, the bad entry and transfer removed.
    _sql(jobs_db, "UPDATE jobs SET payment_status = 'completed' WHERE id = $1", live)
    _sql(wallet_db, "DELETE FROM entries WHERE transfer_id = $1", transfer, past_triggers=True)
    _sql(wallet_db, "UPDATE accounts SET posted = 0 WHERE id = CAST($1 AS uuid)", account)
    _sql(wallet_db, "DELETE FROM transfers WHERE id = $1", transfer)
    got = report(system)
    assert not [v for v in got.violations if v.check != "provider_mismatch"], got.violations


def _captured_payment(payments: ppb_grpc.PaymentsServiceStub, owner: str, gtx: str) -> ppb.Payment:
    """A card payment authorized and captured through payments (not a posting's)."""
    branch = common_pb2.TccBranch(global_tx_id=gtx, branch_id="payment")
    payments.Authorize(
        ppb.AuthorizeRequest(
            request_id=f"auth-{gtx}",
            branch=branch,
            owner_id=owner,
            amount=common_pb2.Money(amount_minor=3000, currency="USD"),
            method=ppb.PAYMENT_METHOD_TYPE_CARD,
            payment_method_token="pm_card_visa",
            metadata={"subsystem": "audit-test"},
        ),
        timeout=30,
    )

    def captured() -> ppb.Payment | None:
        reply = payments.Capture(
            ppb.CaptureRequest(request_id=f"cap-{gtx}", branch=branch), timeout=30
        )
        return reply.payment if reply.payment.state == ppb.Payment.CAPTURED else None

    return eventually(captured, timeout=30)


def test_a_refund_made_only_at_the_provider_is_reported_and_normal_refunds_are_not(
    system: System,
) -> None:
    """Issue 11 §3: the provider's refunds are matched with payments' refund records."""
    system.admin.clear_faults()
    company = new_company()
    gtx = f"refunds-{uuid.uuid4().hex[:8]}"
    with signed_channel(
        system.stack.services["payments"].target, caller="jobs", service="payments"
    ) as channel:
        payments = ppb_grpc.PaymentsServiceStub(channel)
        normal = _captured_payment(payments, company, f"{gtx}-a")
        for n, amount in enumerate((1000, 2000)):  # refunded in two parts, through payments
            payments.Refund(
                ppb.RefundRequest(
                    request_id=f"rf-{gtx}-{n}",
                    payment_id=normal.payment_id,
                    amount_minor=amount,
                    reason="requested_by_customer",
                ),
                timeout=30,
            )
        behind = _captured_payment(payments, company, f"{gtx}-b")

    def refund_mismatches() -> set[str]:
        got = report(system)
        return {v.subject_id for v in got.violations if v.check == "provider_refund_mismatch"}

    # Normal refunds reconcile clean.
    assert normal.payment_id not in refund_mismatches()
    assert behind.payment_id not in refund_mismatches()
    # Refunded at the provider (its dashboard), its webhook lost: payments never hears of it.
    client = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    system.admin.add_fault("webhook_drop")
    try:
        client.v1.refunds.create(
            params={"payment_intent": behind.provider_payment_id, "amount": 700}
        )
    finally:
        system.admin.clear_faults()
    found = eventually(
        lambda: got if behind.payment_id in (got := refund_mismatches()) else None, timeout=30
    )
    assert normal.payment_id not in found
    assert metric(system, "provider_refund_mismatch") >= 1
