"""The `/_sandbox/` admin API every offline provider sandbox answers (Stripe's and the kit's:
health, reset, clock, faults, webhook deliveries and endpoints), over plain HTTP; the Stripe
sandbox's client (sandbox_client.SandboxAdmin) and the kit's (provider_sandboxes.KitAdmin) add
their own calls to it."""

from __future__ import annotations

from typing import Any

import httpx


class AdminApi:
    """One sandbox's admin API and plain HTTP to its pages (`http`)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, json: Any = None) -> Any:
        response = self.http.request(method, path, json=json)
        response.raise_for_status()
        return response.json()

    # -- state -----------------------------------------------------------------------------

    def healthy(self) -> bool:
        return bool(self.call("GET", "/_sandbox/health")["status"] == "ok")

    def reset(self) -> None:
        """Forget every object, event, idempotency key, delivery and fault."""
        self.call("POST", "/_sandbox/reset")

    def advance_clock(self, seconds: float) -> int:
        """Move the sandbox clock forward (expires what is due)."""
        return int(self.call("POST", "/_sandbox/clock/advance", {"seconds": seconds})["now"])

    # -- faults ----------------------------------------------------------------------------

    def add_fault(self, kind: str, **spec: Any) -> dict[str, Any]:
        """Arm a fault, e.g. `add_fault("error", status=503, count=2)`,
        `add_fault("timeout_after_commit", seconds=5, path_prefix="/v1/payment_intents")`."""
        fault: dict[str, Any] = self.call("POST", "/_sandbox/faults", {"kind": kind, **spec})
        return fault

    def faults(self) -> list[dict[str, Any]]:
        faults: list[dict[str, Any]] = self.call("GET", "/_sandbox/faults")["faults"]
        return faults

    def clear_faults(self) -> None:
        self.call("DELETE", "/_sandbox/faults")

    # -- webhooks --------------------------------------------------------------------------

    def deliveries(
        self, event_id: str | None = None, event_type: str | None = None
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"event_id": event_id, "type": event_type}.items() if v}
        response = self.http.get("/_sandbox/webhooks/deliveries", params=params)
        response.raise_for_status()
        deliveries: list[dict[str, Any]] = response.json()["deliveries"]
        return deliveries

    def flush_webhooks(self) -> int:
        """Release webhooks held by a `webhook_reorder` fault (newest first)."""
        return int(self.call("POST", "/_sandbox/webhooks/flush")["released"])

    def webhook_endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint, with its signing secret."""
        endpoints: list[dict[str, Any]] = self.call("GET", "/_sandbox/webhooks/endpoints")[
            "endpoints"
        ]
        return endpoints
