"""Redirect targets: a URL given by a client (returnUrl, cancelUrl) is followed only when its
origin is one of the gateway's allowed origins, so the gateway is never an open redirect."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(url: str) -> Origin | None:
    """(scheme, host, port) of an absolute http(s) URL, or None when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[scheme]


def is_allowed_redirect(url: str, allowed: Collection[Origin]) -> bool:
    """True when `url` is an absolute http(s) URL whose origin is allowed (no user info)."""
    origin = normalize_origin(url)
    return origin is not None and origin in allowed
