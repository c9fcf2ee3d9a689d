"""Events: every state change as Stripe records it; retrieve and list (by type, created)."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from stripe_sandbox.params import Params
from stripe_sandbox.store import Context, StripeObject

if TYPE_CHECKING:
    from stripe_sandbox.runtime import Sandbox


def retrieve(sb: Sandbox, ctx: Context, p: Params, event: str) -> StripeObject:
    return sb.store.get("event", event, ctx.account)


def list_(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    single = p.text("type")  # `payment_intent.*` wildcards, as Stripe allows
    several = p.strings("types")
    patterns = ([single] if single else []) + several

    def wanted(event: StripeObject) -> bool:
        return not patterns or any(fnmatch.fnmatchcase(event["type"], pat) for pat in patterns)

    return sb.store.list("event", p, "/v1/events", ctx.account, where=wanted)
