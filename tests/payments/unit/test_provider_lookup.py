"""The provider registry: lookup by the provider a payment was made with, the default only for
new payments, and PROVIDER_NOT_AVAILABLE (never a crash) for a provider that is not configured."""

from __future__ import annotations

import pytest

from payments.domain import errors
from payments.domain.provider import OutcomeUnknown, looks_like_card_number
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import FakeProvider


class Other(FakeProvider):
    name = "paypal"


def test_lookup_by_name_default_and_refusals() -> None:
    stripe, paypal = FakeProvider(), Other()
    registry = ProviderRegistry([stripe, paypal], default="paypal")
    assert registry.names == ["paypal", "stripe"]
    assert registry.for_new("") is paypal and registry.for_new("STRIPE") is stripe
    assert registry.of_existing("stripe") is stripe  # whatever the default is
    with pytest.raises(errors.ProviderNotAvailable) as refused:
        registry.for_new("razorpay")
    assert refused.value.metadata == {"provider": "razorpay", "offered": "paypal,stripe"}
    # A payment whose provider is no longer configured is polled later, never a crash.
    with pytest.raises(OutcomeUnknown):
        registry.of_existing("razorpay")


def test_a_default_that_is_not_configured_stops_start_up() -> None:
    with pytest.raises(ValueError, match="razorpay"):
        ProviderRegistry([FakeProvider()], default="razorpay")
    with pytest.raises(ValueError):
        ProviderRegistry([])


@pytest.mark.parametrize(
    ("token", "card"),
    [
        ("4242424242424242", True),
        ("4242 4242 4242 4242", True),
        ("4000-0000-0000-0002", True),
        ("pm_card_visa", False),
        ("tok_visa", False),
        ("123", False),
    ],
)
def test_a_card_number_is_recognised_whatever_the_provider(token: str, card: bool) -> None:
    assert looks_like_card_number(token) is card
