"""PaymentMethods: Stripe's test tokens (`pm_card_visa`, ...) become real-looking `pm_` objects
that remember which outcome they produce."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from stripe_sandbox import ids
from stripe_sandbox.cards import TEST_PAYMENT_METHODS, TestMethod
from stripe_sandbox.errors import no_such
from stripe_sandbox.params import Params
from stripe_sandbox.store import Context, StripeObject

if TYPE_CHECKING:
    from stripe_sandbox.runtime import Sandbox

_EMPTY_ADDRESS = {
    "city": None,
    "country": None,
    "line1": None,
    "line2": None,
    "postal_code": None,
    "state": None,
}


def make(
    sb: Sandbox,
    ctx: Context,
    method: TestMethod,
    *,
    exp_month: int | None = None,
    exp_year: int | None = None,
    name: str | None = None,
) -> StripeObject:
    """A new PaymentMethod object for a test method."""
    fingerprint = hashlib.sha256(f"{method.brand}{method.last4}".encode()).hexdigest()[:16]
    pm: StripeObject = {
        "id": ids.new_id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": dict(_EMPTY_ADDRESS),
            "email": None,
            "name": name,
            "phone": None,
        },
        "created": sb.store.now(),
        "customer": None,
        "livemode": False,
        "metadata": {},
        "type": method.type,
    }
    if method.type == "card":
        pm["card"] = {
            "brand": method.brand,
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": None,
                "cvc_check": "pass",
            },
            "country": "US",
            "display_brand": method.brand,
            "exp_month": exp_month or 12,
            "exp_year": exp_year or time.gmtime().tm_year + 3,
            "fingerprint": fingerprint,
            "funding": method.funding,
            "last4": method.last4,
            "networks": {"available": [method.brand], "preferred": None},
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        }
    else:
        pm["us_bank_account"] = {
            "account_holder_type": "individual",
            "account_type": "checking",
            "bank_name": method.brand,
            "financial_connections_account": None,
            "fingerprint": fingerprint,
            "last4": method.last4,
            "networks": {"preferred": "ach", "supported": ["ach"]},
            "routing_number": "110000000",
            "status_details": {},
        }
    sb.store.add("payment_method", pm, ctx.account)
    sb.store.meta(pm["id"])["test_method"] = method
    return pm


def resolve(sb: Sandbox, ctx: Context, pm_id: str, param: str = "payment_method") -> StripeObject:
    """An existing PaymentMethod, or a new one for a test token; otherwise resource_missing."""
    test_method = TEST_PAYMENT_METHODS.get(pm_id)
    if test_method is not None:
        return make(sb, ctx, test_method)
    existing = sb.store.objects.get("payment_method", {}).get(pm_id)
    if existing is None or sb.store.owner.get(pm_id) != ctx.account:
        raise no_such("PaymentMethod", pm_id, param=param)
    return existing


def test_method_of(sb: Sandbox, pm: StripeObject) -> TestMethod:
    method: TestMethod = sb.store.meta(pm["id"])["test_method"]
    return method


def details(pm: StripeObject) -> StripeObject:
    """`payment_method_details` of a charge paid with `pm`."""
    kind = pm["type"]
    specifics = dict(pm[kind])
    specifics.pop("checks", None)
    return {"type": kind, kind: specifics}


def retrieve(sb: Sandbox, ctx: Context, p: Params, payment_method: str) -> StripeObject:
    if payment_method in TEST_PAYMENT_METHODS:
        return resolve(sb, ctx, payment_method)
    return sb.store.get("payment_method", payment_method, ctx.account, label="PaymentMethod")
