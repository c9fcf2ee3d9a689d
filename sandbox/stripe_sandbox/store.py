"""In-memory state: Stripe objects by kind, who owns them, events, listing and expansion.

Every read and write happens while holding `Store.lock`; operations in `resources/` are plain
functions that expect the caller to hold it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox_kit.jsondata import copy_json
from stripe_sandbox import ids
from stripe_sandbox.errors import invalid_param, no_such
from stripe_sandbox.params import Params

StripeObject = dict[str, Any]

# Id prefix -> object kind, so that `expand[]` can find what an id points to.
KIND_BY_PREFIX: dict[str, str] = {
    "pi": "payment_intent",
    "ch": "charge",
    "pm": "payment_method",
    "re": "refund",
    "cus": "customer",
    "cs": "checkout.session",
    "acct": "account",
    "tr": "transfer",
    "trr": "transfer_reversal",
    "po": "payout",
    "evt": "event",
    "we": "webhook_endpoint",
}

# The API version stamped on events when a request names none (what stripe-python 16 sends).
DEFAULT_API_VERSION = "2026-10-28.endive"


@dataclass(frozen=True)
class Context:
    """Who is asking and how: the connected account, the request's ids, where the sandbox lives."""

    account: str | None = None
    request_id: str | None = None
    idempotency_key: str | None = None
    api_version: str = DEFAULT_API_VERSION
    base_url: str = "http://127.0.0.1:12111"


EventListener = Callable[[StripeObject], None]


@dataclass
class Store:
    """All sandbox state, guarded by one asyncio lock."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    objects: dict[str, dict[str, StripeObject]] = field(default_factory=dict)
    owner: dict[str, str | None] = field(default_factory=dict)
    internal: dict[str, dict[str, Any]] = field(default_factory=dict)
    listeners: list[EventListener] = field(default_factory=list)
    clock_offset: float = 0.0

    def now(self) -> int:
        """The sandbox's clock (real time plus any admin-requested advance), unix seconds."""
        return int(time.time() + self.clock_offset)

    def reset(self) -> None:
        """Forget every object (listeners stay)."""
        self.objects.clear()
        self.owner.clear()
        self.internal.clear()
        self.clock_offset = 0.0

    # -- objects ---------------------------------------------------------------------------

    def add(self, kind: str, obj: StripeObject, account: str | None = None) -> StripeObject:
        self.objects.setdefault(kind, {})[obj["id"]] = obj
        self.owner[obj["id"]] = account
        return obj

    def get(
        self,
        kind: str,
        object_id: str | None,
        account: str | None = None,
        *,
        label: str | None = None,
        param: str | None = None,
    ) -> StripeObject:
        """The object, or Stripe's `No such <label>` error (404, or 400 when `param` is given)."""
        obj = self.objects.get(kind, {}).get(object_id or "")
        if obj is None or self.owner.get(obj["id"]) != account:
            raise no_such(label or kind, object_id or "", param=param)
        return obj

    def find(self, object_id: str) -> StripeObject | None:
        """Any object by id, whatever its kind (for expansion)."""
        kind = KIND_BY_PREFIX.get(object_id.split("_", 1)[0])
        if kind is None:
            return None
        return self.objects.get(kind, {}).get(object_id)

    def meta(self, object_id: str) -> dict[str, Any]:
        """Sandbox-only facts about an object that are not part of its wire shape."""
        return self.internal.setdefault(object_id, {})

    def all(self, kind: str, account: str | None = None) -> list[StripeObject]:
        """Objects of a kind owned by `account`, oldest first."""
        return [o for o in self.objects.get(kind, {}).values() if self.owner[o["id"]] == account]

    def list(
        self,
        kind: str,
        params: Params,
        url: str,
        account: str | None = None,
        where: Callable[[StripeObject], bool] | None = None,
    ) -> StripeObject:
        """A Stripe list page, newest first, with `limit`, `starting_after`, `ending_before`
        and `created` filters."""
        limit = params.integer("limit", minimum=1) or 10
        if limit > 100:
            raise invalid_param("This value must be less than or equal to 100.", param="limit")
        items = [o for o in reversed(self.all(kind, account)) if where is None or where(o)]
        items = [o for o in items if _created_matches(o, params)]
        starting_after = params.text("starting_after")
        ending_before = params.text("ending_before")
        if starting_after:
            position = _index_of(items, starting_after, "starting_after")
            window = items[position + 1 :]
            page, has_more = window[:limit], len(window) > limit
        elif ending_before:
            position = _index_of(items, ending_before, "ending_before")
            window = items[:position]
            page, has_more = window[-limit:], len(window) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        return {"object": "list", "data": page, "has_more": has_more, "url": url}

    # -- events ----------------------------------------------------------------------------

    def emit(
        self,
        event_type: str,
        obj: StripeObject,
        ctx: Context | None,
        previous_attributes: dict[str, Any] | None = None,
    ) -> StripeObject:
        """Record an Event with a snapshot of `obj` and hand it to the listeners (webhooks)."""
        account = self.owner.get(obj["id"])
        data: dict[str, Any] = {"object": copy_json(obj)}
        if previous_attributes:
            data["previous_attributes"] = copy_json(previous_attributes)
        event: StripeObject = {
            "id": ids.new_id("evt"),
            "object": "event",
            "api_version": ctx.api_version if ctx else DEFAULT_API_VERSION,
            "created": self.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 0,
            "request": {
                "id": ctx.request_id if ctx else None,
                "idempotency_key": ctx.idempotency_key if ctx else None,
            },
            "type": event_type,
        }
        if account:
            event["account"] = account
        self.add("event", event, account)
        for listener in self.listeners:
            listener(event)
        return event

    # -- expansion -------------------------------------------------------------------------

    def expand(self, obj: Any, paths: list[str]) -> Any:
        """A copy of `obj` with the ids named by `expand[]` paths replaced by their objects."""
        result = copy_json(obj)
        for path in paths:
            result = self._expand_path(result, path.split("."))
        return result

    def _expand_path(self, node: Any, parts: list[str]) -> Any:
        if not parts or not isinstance(node, dict):
            return node
        head, rest = parts[0], parts[1:]
        if head == "data" and isinstance(node.get("data"), list) and node.get("object") == "list":
            node["data"] = [self._expand_path(item, rest) for item in node["data"]]
            return node
        value = node.get(head)
        if isinstance(value, str):
            target = self.find(value)
            if target is None:
                raise invalid_param(f"This property cannot be expanded ({head}).", param="expand")
            value = copy_json(target)
        if isinstance(value, dict):
            node[head] = self._expand_path(value, rest)
        return node


def _index_of(items: list[StripeObject], object_id: str, param: str) -> int:
    for index, item in enumerate(items):
        if item["id"] == object_id:
            return index
    raise no_such("object", object_id, param=param)


def _created_matches(obj: StripeObject, params: Params) -> bool:
    if "created" not in params:
        return True
    created = obj.get("created", 0)
    raw = params.raw("created")
    if isinstance(raw, str):
        return created == params.integer("created")
    bounds = params.sub("created")
    checks = {
        "gt": lambda v: created > v,
        "gte": lambda v: created >= v,
        "lt": lambda v: created < v,
        "lte": lambda v: created <= v,
    }
    for op, check in checks.items():
        value = bounds.integer(op)
        if value is not None and not check(value):
            return False
    return True
