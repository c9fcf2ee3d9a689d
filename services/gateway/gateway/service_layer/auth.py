"""JWT verification and roles (SEC-1); token signing shared with `make token`.

Only HS256 is accepted (a fixed list: `none` and every other algorithm are refused), `iss`, `aud`,
`exp` and `sub` are required and checked, and the key is chosen by the token's `kid` header so that
several keys are valid at once while keys rotate. The FastAPI dependencies that apply these rules
to a request live in entrypoints/deps.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from hirepay_platform.expiring import ExpiringCache
from hirepay_platform.untrusted import text_problem

# Development-only signing key: accepted only when GATEWAY_ENV=development (entrypoints/settings.py
# refuses its kid elsewhere), so a token minted by `make token` can never open a production gateway.
DEV_JWT_KID = "dev-only"
DEV_JWT_SECRET = "hirepay-dev-only-jwt-signing-key-never-use-in-production"
DEFAULT_ISSUER = "hirepay-dev"
DEFAULT_AUDIENCE = "hirepay"

ALGORITHMS = ["HS256"]
ROLES = frozenset({"company", "applicant", "customer", "contractor", "admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: str
    role: str
    email: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def owns(self, owner_id: str) -> bool:
        """True when the caller may reach an object owned by `owner_id` (its owner, or admin)."""
        return self.is_admin or (bool(owner_id) and owner_id == self.user_id)


class InvalidToken(Exception):
    """The token was refused; the message says why in words safe to return."""


def issue_token(
    *,
    user_id: str,
    role: str,
    kid: str = DEV_JWT_KID,
    secret: str = DEV_JWT_SECRET,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    ttl_seconds: int = 3600,
    email: str | None = None,
    now: float | None = None,
) -> str:
    """Sign a token the gateway accepts (used by `make token` and the tests)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "role": role,
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if email:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})


def verify_token(
    token: str,
    *,
    keys: Mapping[str, str],
    issuer: str,
    audience: str,
    leeway: int = 30,
    max_lifetime: int = 86_400,
    now: float | None = None,
) -> Principal:
    """Check a bearer token and return its principal, or raise InvalidToken.

    A correctly signed token is still untrusted input: every claim's type is checked (a `role`
    that is a list or an object is refused, not compared), and a token may not live longer than
    `max_lifetime` seconds (from its `iat`, and from now)."""
    return _verify(
        token,
        keys=keys,
        issuer=issuer,
        audience=audience,
        leeway=leeway,
        max_lifetime=max_lifetime,
        now=time.time() if now is None else now,
    )[0]


def _verify(
    token: str,
    *,
    keys: Mapping[str, str],
    issuer: str,
    audience: str,
    leeway: int,
    max_lifetime: int,
    now: float,
) -> tuple[Principal, int]:
    """verify_token's checks; also the moment the token stops being accepted (pyjwt refuses it
    once `exp <= now - leeway`)."""
    try:
        claims = jwt.decode(
            token,
            _signing_key(token, keys),
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"missing claim {exc.claim}") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(_decode_problem(exc)) from None
    sub, role = claims.get("sub"), claims.get("role")
    email = claims.get("email")
    email = "" if email is None else email
    if not isinstance(sub, str) or not sub.strip() or len(sub) > 200 or text_problem(sub):
        raise InvalidToken("invalid subject")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidToken("unknown role")
    if not isinstance(email, str) or len(email) > 254 or text_problem(email):
        raise InvalidToken("invalid email")
    _check_lifetime(claims, max_lifetime, leeway, now)
    return Principal(user_id=sub, role=role, email=email), int(claims["exp"]) + leeway


def _check_lifetime(claims: Mapping[str, Any], max_lifetime: int, leeway: int, now: float) -> None:
    """Refuse tokens minted to live longer than allowed (a leaked long-lived token is a standing
    key); pyjwt has already checked that `exp` and `iat` are numbers."""
    exp, iat = claims["exp"], claims.get("iat")
    if iat is not None and exp - iat > max_lifetime:
        raise InvalidToken("token lifetime too long")
    if exp - now > max_lifetime + leeway:
        raise InvalidToken("token lifetime too long")


def _signing_key(token: str, keys: Mapping[str, str]) -> str:
    """The key named by the token's `kid`, once its header names an allowed algorithm."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("malformed token") from None
    if header.get("alg") not in ALGORITHMS:
        raise InvalidToken("algorithm not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise InvalidToken("unknown key id")
    return keys[kid]


# What a refused decode tells the caller; any other PyJWTError gets the generic answer.
_DECODE_PROBLEMS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
)


def _decode_problem(exc: jwt.PyJWTError) -> str:
    for kind, problem in _DECODE_PROBLEMS:
        if isinstance(exc, kind):
            return problem
    return "signature or claims invalid"


class Authenticator:
    """Verifies tokens with the gateway's configured keys.

    A client sends the same token with every request, so an accepted token is remembered by its
    exact text until it expires (`exp` plus the leeway) instead of being decoded and its HMAC
    checked again (issue 13): every other check only ever turns from refusing to accepting as
    time passes (`iat`, the lifetime left), the keys are fixed for the process, and refusals are
    not remembered. After its expiry a remembered token is refused like any other."""

    def __init__(
        self,
        keys: Mapping[str, str],
        issuer: str,
        audience: str,
        leeway: int,
        max_lifetime: int = 86_400,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = dict(keys)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.clock = clock
        self._accepted: ExpiringCache[str, Principal] = ExpiringCache()

    def verify(self, token: str) -> Principal:
        now = self.clock()
        principal = self._accepted.get(token, now)
        if principal is not None:
            return principal
        principal, until = _verify(
            token,
            keys=self.keys,
            issuer=self.issuer,
            audience=self.audience,
            leeway=self.leeway,
            max_lifetime=self.max_lifetime,
            now=now,
        )
        if now >= until:
            # Judged on this clock too, so a remembered token and a fresh one agree.
            raise InvalidToken("token expired")
        self._accepted.put(token, principal, until, now)
        return principal
