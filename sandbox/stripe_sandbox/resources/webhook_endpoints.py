"""Webhook endpoints: created through the API (secret shown once, as Stripe does) or configured
at start-up from SANDBOX_WEBHOOK_URL with SANDBOX_WEBHOOK_SECRET."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from stripe_sandbox import ids
from stripe_sandbox.errors import invalid_param, missing_param
from stripe_sandbox.params import Params, merge_metadata
from stripe_sandbox.store import DEFAULT_API_VERSION, Context, StripeObject

if TYPE_CHECKING:
    from stripe_sandbox.runtime import Sandbox


def _valid_url(p: Params, required: bool) -> str | None:
    url = p.text("url", required=required)
    if url is not None and (
        urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc
    ):
        raise invalid_param(f"Invalid URL: {url}", param="url", code="url_invalid")
    return url


def _new_endpoint(
    sb: Sandbox,
    url: str,
    enabled_events: list[str],
    secret: str,
    *,
    source: str,
    connect: bool = False,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
    api_version: str | None = None,
) -> StripeObject:
    endpoint: StripeObject = {
        "id": ids.new_id("we"),
        "object": "webhook_endpoint",
        "api_version": api_version,
        "application": None,
        "created": sb.store.now(),
        "description": description,
        "enabled_events": enabled_events,
        "livemode": False,
        "metadata": metadata or {},
        "status": "enabled",
        "url": url,
    }
    sb.store.add("webhook_endpoint", endpoint)
    meta = sb.store.meta(endpoint["id"])
    meta.update(secret=secret, source=source, connect=connect)
    return endpoint


def register_configured(sb: Sandbox) -> None:
    """Endpoints for the configured URLs, subscribed to the configured events (default every
    event), signed with one secret."""
    for url in sb.config.webhook_urls:
        _new_endpoint(
            sb,
            url,
            list(sb.config.webhook_events),
            sb.webhook_secret,
            source="config",
            description="configured at start-up",
            api_version=DEFAULT_API_VERSION,
        )


def create(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    url = _valid_url(p, required=True)
    events = p.strings("enabled_events")
    if not events:
        raise missing_param("enabled_events")
    assert url is not None
    endpoint = _new_endpoint(
        sb,
        url,
        events,
        ids.new_id("whsec"),
        source="api",
        connect=p.boolean("connect"),
        description=p.text("description"),
        metadata=p.metadata(),
        api_version=p.text("api_version"),
    )
    # The secret is part of the create response only.
    return {**endpoint, "secret": sb.store.meta(endpoint["id"])["secret"]}


def retrieve(sb: Sandbox, ctx: Context, p: Params, webhook_endpoint: str) -> StripeObject:
    return sb.store.get("webhook_endpoint", webhook_endpoint)


def update(sb: Sandbox, ctx: Context, p: Params, webhook_endpoint: str) -> StripeObject:
    endpoint = sb.store.get("webhook_endpoint", webhook_endpoint)
    url = _valid_url(p, required=False)
    if url is not None:
        endpoint["url"] = url
    if "enabled_events" in p:
        endpoint["enabled_events"] = p.strings("enabled_events")
    if "disabled" in p:
        endpoint["status"] = "disabled" if p.boolean("disabled") else "enabled"
    if "description" in p:
        endpoint["description"] = p.text("description")
    endpoint["metadata"] = merge_metadata(endpoint["metadata"], p.metadata())
    return endpoint


def delete(sb: Sandbox, ctx: Context, p: Params, webhook_endpoint: str) -> StripeObject:
    endpoint = sb.store.get("webhook_endpoint", webhook_endpoint)
    sb.store.objects["webhook_endpoint"].pop(endpoint["id"])
    return {"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True}


def list_(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    return sb.store.list("webhook_endpoint", p, "/v1/webhook_endpoints")
