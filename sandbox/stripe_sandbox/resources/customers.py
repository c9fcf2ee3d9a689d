"""Customers: create, retrieve, update, delete, list (by email)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stripe_sandbox import ids
from stripe_sandbox.params import Params, merge_metadata
from stripe_sandbox.store import Context, StripeObject

if TYPE_CHECKING:
    from stripe_sandbox.runtime import Sandbox

_TEXT_FIELDS = ("email", "name", "description", "phone")


def create(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    customer: StripeObject = {
        "id": ids.new_id("cus"),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": sb.store.now(),
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": p.text("description"),
        "email": p.text("email", max_length=512),
        "invoice_prefix": ids.random_token(8).upper(),
        "livemode": False,
        "metadata": p.metadata() or {},
        "name": p.text("name", max_length=256),
        "phone": p.text("phone", max_length=20),
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
    }
    sb.store.add("customer", customer, ctx.account)
    sb.store.emit("customer.created", customer, ctx)
    return customer


def retrieve(sb: Sandbox, ctx: Context, p: Params, customer: str) -> StripeObject:
    return sb.store.get("customer", customer, ctx.account)


def update(sb: Sandbox, ctx: Context, p: Params, customer: str) -> StripeObject:
    obj = sb.store.get("customer", customer, ctx.account)
    previous: StripeObject = {}
    for name in _TEXT_FIELDS:
        if name in p:
            value = p.text(name)
            if value != obj[name]:
                previous[name] = obj[name]
                obj[name] = value
    metadata = merge_metadata(obj["metadata"], p.metadata())
    if metadata != obj["metadata"]:
        previous["metadata"] = obj["metadata"]
        obj["metadata"] = metadata
    if previous:
        sb.store.emit("customer.updated", obj, ctx, previous)
    return obj


def delete(sb: Sandbox, ctx: Context, p: Params, customer: str) -> StripeObject:
    obj = sb.store.get("customer", customer, ctx.account)
    sb.store.objects["customer"].pop(obj["id"])
    sb.store.emit("customer.deleted", obj, ctx)
    return {"id": obj["id"], "object": "customer", "deleted": True}


def list_(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    email = p.text("email")
    return sb.store.list(
        "customer",
        p,
        "/v1/customers",
        ctx.account,
        where=lambda c: email is None or c["email"] == email,
    )
