"""Money amounts are JSON integers (PAY-11): an amount sent as a string, a float or a boolean is
`400 VALIDATION_FAILED` naming the field, and no backend is called. Before, `"7000"` was coerced
to 7000 and a withdrawal of it was paid out (found against `make run`)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.gateway_harness import Backends, bearer

RETURN = {"returnUrl": "https://app.example/ok", "cancelUrl": "https://app.example/no"}


def money(amount: Any) -> dict[str, Any]:
    return {"amount_minor": amount, "currency": "USD"}


# (path, role, body with the amount in it, the field error expected)
CASES: list[tuple[str, str, Any, str]] = [
    (
        "/api/coins/purchase",
        "customer",
        lambda a: {"amountMinor": a, "currency": "USD", **RETURN},
        "amountMinor",
    ),
    (
        "/api/wallet/withdrawals",
        "contractor",
        lambda a: {"amount": money(a)},
        "amount.amount_minor",
    ),
    (
        "/api/bidding",
        "customer",
        lambda a: {
            "jobId": "mjob_1",
            "contractorId": "dev-1",
            "amount": money(a),
            "funding": "card",
            "paymentMethod": "pm_card_visa",
        },
        "amount.amount_minor",
    ),
    (
        "/api/coins/job-payment",
        "customer",
        lambda a: {"jobId": "mjob_1", "freelancerId": "dev-1", "amount": a},
        "amount",
    ),
    (
        "/api/payments/job-payment",
        "customer",
        lambda a: {"jobId": "mjob_1", "freelancerId": "dev-1", "amount": a, **RETURN},
        "amount",
    ),
    (
        "/api/admin/disputes/dsp_1/resolve",
        "admin",
        lambda a: {"resolution": "split", "contractorMinor": a},
        "contractorMinor",
    ),
    (
        "/api/marketplace/jobs",
        "customer",
        lambda a: {
            "title": "Build a booking site",
            "description": "A small booking site in Django.",
            "budget": {"amount_minor": a, "currency": "USD"},
        },
        "budget.amount_minor",
    ),
]


def backend_calls(backends: Backends) -> int:
    return len(backends.jobs.calls) + len(backends.payments.calls) + len(backends.wallet.calls)


@pytest.mark.parametrize("amount", ["7000", 7000.0, True])
@pytest.mark.parametrize(("path", "role", "make_body", "field"), CASES)
async def test_an_amount_that_is_no_json_integer_is_refused(
    client: httpx.AsyncClient,
    backends: Backends,
    path: str,
    role: str,
    make_body: Any,
    field: str,
    amount: Any,
) -> None:
    before = backend_calls(backends)
    headers = {**bearer(role, f"{role}-1"), "Idempotency-Key": f"money-{path}-{amount!r}"}
    resp = await client.post(path, json=make_body(amount), headers=headers)
    assert resp.status_code == 400, resp.text
    data = resp.json()
    assert data["error"] == "VALIDATION_FAILED"
    assert field in data["fields"], data
    assert backend_calls(backends) == before
