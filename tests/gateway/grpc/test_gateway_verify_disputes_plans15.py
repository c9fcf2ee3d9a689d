"""`GET /api/payments/verify/{transactionId}` shows the purchase's card disputes (API-2, API-4):
what GetTransaction returns, amounts in minor units with their currency, status and reason, the
times; never the provider's dispute id or its fees; documented in the OpenAPI schema."""

from __future__ import annotations

import httpx

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from tests.support.gateway_fakes import make_transaction, ts
from tests.support.gateway_harness import Backends, bearer

Status = pay_pb.PaymentDispute.Status


def _disputed(request: pay_pb.GetTransactionRequest) -> pay_pb.TransactionResponse:
    """A purchase of 30.00 USD refunded by a dispute lost in full, and an inquiry still open."""
    lost = pay_pb.PaymentDispute(
        dispute_id="dp_secret_lost",
        amount=common_pb2.Money(amount_minor=3000, currency="USD"),
        status=Status.LOST,
        reason="fraudulent",
        withdrawn_minor=3000,
        reinstated_minor=0,
        fee_minor=1500,
        created_at=ts(1_768_041_000),
        updated_at=ts(1_768_042_000),
        closed_at=ts(1_768_043_000),
    )
    inquiry = pay_pb.PaymentDispute(
        dispute_id="PP-D-secret",
        amount=common_pb2.Money(amount_minor=1250, currency="USD"),
        status=Status.WARNING_NEEDS_RESPONSE,
        reason="product_not_received",
        created_at=ts(1_768_044_000),
        updated_at=ts(1_768_044_000),
    )
    txn = make_transaction(request.transaction_id, status=pay_pb.Transaction.REFUNDED)
    return pay_pb.TransactionResponse(transaction=txn, disputes=[lost, inquiry])


async def test_verify_shows_the_purchases_disputes_without_provider_ids_or_fees(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on("GetTransaction", _disputed)
    for who in (bearer("company", "company-a"), bearer("admin", "ops")):
        resp = await client.get("/api/payments/verify/txn_abc123", headers=who)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "REFUNDED"
        assert body["disputes"] == [
            {
                "status": "lost",
                "reason": "fraudulent",
                "amountMinor": 3000,
                "currency": "USD",
                "withdrawnMinor": 3000,
                "reinstatedMinor": 0,
                "openedAt": "2026-01-10T10:30:00Z",
                "closedAt": "2026-01-10T11:03:20Z",
            },
            {
                "status": "warning_needs_response",
                "reason": "product_not_received",
                "amountMinor": 1250,
                "currency": "USD",
                "withdrawnMinor": 0,
                "reinstatedMinor": 0,
                "openedAt": "2026-01-10T11:20:00Z",
                "closedAt": None,
            },
        ]
        # The provider's ids and its fees are the merchant's, never in the buyer's answer.
        assert "secret" not in resp.text and "fee" not in resp.text.lower()
    # Someone else's purchase is still answered like a missing one (SEC-2).
    other = await client.get(
        "/api/payments/verify/txn_abc123", headers=bearer("company", "company-b")
    )
    assert other.status_code == 404 and "disputes" not in other.text


async def test_verify_without_disputes_answers_an_empty_list(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "GetTransaction",
        lambda r: pay_pb.TransactionResponse(transaction=make_transaction(r.transaction_id)),
    )
    resp = await client.get(
        "/api/payments/verify/txn_abc123", headers=bearer("company", "company-a")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["disputes"] == []


async def test_openapi_documents_the_verify_answers_disputes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    disputes = schemas["VerifyOut"]["properties"]["disputes"]
    assert disputes["type"] == "array"
    assert disputes["items"] == {"$ref": "#/components/schemas/PurchaseDisputeOut"}
    dispute = schemas["PurchaseDisputeOut"]
    assert set(dispute["properties"]) == {
        "status",
        "reason",
        "amountMinor",
        "currency",
        "withdrawnMinor",
        "reinstatedMinor",
        "openedAt",
        "closedAt",
    }
    assert dispute["properties"]["amountMinor"]["type"] == "integer"
    assert "lost" in dispute["properties"]["status"]["description"]
    ok = spec["paths"]["/api/payments/verify/{transaction_id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/VerifyOut"}
