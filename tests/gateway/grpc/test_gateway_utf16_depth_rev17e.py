"""A deep JSON body is a 400 in whatever encoding JSON may come in (rev17e): a UTF-16 or UTF-32
body whose bytes hide brackets from a byte count (a quote byte inside another character) was
parsed past the depth limit and overflowed the parser, a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.grpc.test_gateway_hardening import assert_validation_failed, no_backend_calls
from tests.support.gateway_harness import Backends, bearer

DEEP = "[" * 5_000 + "]" * 5_000


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-32-be"])
async def test_a_deep_utf16_or_utf32_body_is_400_before_any_backend(
    client: httpx.AsyncClient, backends: Backends, encoding: str
) -> None:
    body = f'{{"title": "\u4e22", "tags": {DEEP}, "location": "\u4e22"}}'.encode(encoding)
    webhook = await client.post(
        "/api/payments/webhook/stripe",
        content=body,
        headers={"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"},
    )
    assert assert_validation_failed(webhook) == {"body": "nested deeper than 64 levels"}
    draft = await client.post(
        "/api/jobs/drafts",
        content=body,
        headers={**bearer("company", "company-a"), "Content-Type": "application/json"},
    )
    assert assert_validation_failed(draft) == {"body": "nested deeper than 64 levels"}
    assert no_backend_calls(backends)
