"""A Stripe webhook is verified with the SDK's WebhookSignature resolved once, not through the
`stripe` package's lazy attribute look-up (its module __getattr__ and import_module) on every
delivery (issue 13: 11 Python calls per webhook, two webhooks per card posting); the signature
is checked as before (rotation, tolerance and the raw bytes: test_stripe_adapter)."""

from __future__ import annotations

import json
import time

import pytest
import stripe

from payments.adapters.stripe_provider import StripeProvider
from payments.domain.provider import SignatureInvalid
from tests.support.python_calls import names_called

SECRET = "whsec_pay12secret"


def _body() -> bytes:
    event = {
        "id": "evt_9", "type": "payment_intent.amount_capturable_updated",
        "created": int(time.time()),
        "data": {"object": {"id": "pi_9", "object": "payment_intent", "status": "requires_capture",
                            "amount": 500, "currency": "usd", "metadata": {"hirepay_payment_id": "pay_9"}}},
    }  # fmt: skip
    return json.dumps(event).encode()


def test_a_delivery_is_verified_without_the_packages_lazy_look_up() -> None:
    provider = StripeProvider("sk_test_x", webhook_secrets=[SECRET])
    body = _body()
    signed = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
    provider.construct_event(body, signed)  # (anything imported once is imported)
    events = []
    called = names_called(lambda: events.append(provider.construct_event(body, signed)))
    assert not called & {"import_module", "_gcd_import"}, called
    assert "verify_header" in called  # the SDK's own check, as before
    assert (events[0].id, events[0].object_id) == ("evt_9", "pi_9")
    wrong = stripe.WebhookSignature.generate_signature_header(body.decode(), "whsec_other")
    with pytest.raises(SignatureInvalid):
        provider.construct_event(body, wrong)
