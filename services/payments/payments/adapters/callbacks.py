"""Signed HTTP callbacks of settlement events to a subsystem (API-5): at-least-once, deduplicable
by the event id, signed like Stripe signs webhooks (`X-Hirepay-Signature: t=...,v1=HMAC-SHA256`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx

SIGNATURE_HEADER = "X-Hirepay-Signature"


def parse_callback_urls(raw: str) -> dict[str, str]:
    """`subsystem=url,subsystem2=url2` or a JSON object {subsystem: url}."""
    raw = raw.strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        data = json.loads(raw)
        return {str(k): str(v) for k, v in data.items()}
    out = {}
    for part in raw.split(","):
        name, sep, url = part.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ValueError(f"callback url entry {part!r} is not subsystem=url")
        out[name.strip()] = url.strip()
    return out


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


class CallbackSender:
    """POSTs one event body to a subsystem's URL; True when it answered 2xx."""

    def __init__(self, urls: dict[str, str], secret: str, timeout: float) -> None:
        self._urls = urls
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=timeout)

    @property
    def subsystems(self) -> frozenset[str]:
        return frozenset(self._urls)

    async def send(self, subsystem: str, event_id: str, body: bytes) -> bool:
        url = self._urls.get(subsystem)
        if url is None:
            return True  # nobody to tell
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": event_id,
            SIGNATURE_HEADER: sign(body, self._secret),
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            return False
        return response.is_success

    async def close(self) -> None:
        await self._client.aclose()
