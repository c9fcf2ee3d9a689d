"""JWT bearer authentication and role checks (SEC-1); token signing shared with `make token`.

Only HS256 is accepted (a fixed list: `none` and every other algorithm are refused), `iss`, `aud`,
`exp` and `sub` are required and checked, and the key is chosen by the token's `kid` header so that
several keys are valid at once while keys rotate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.api.errors import forbidden, unauthenticated
from gateway.entrypoints.settings import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEV_JWT_KID,
    DEV_JWT_SECRET,
)

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
) -> Principal:
    """Check a bearer token and return its principal, or raise InvalidToken."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("malformed token") from None
    if header.get("alg") not in ALGORITHMS:
        raise InvalidToken("algorithm not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise InvalidToken("unknown key id")
    try:
        claims = jwt.decode(
            token,
            keys[kid],
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("wrong audience") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("wrong issuer") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"missing claim {exc.claim}") from None
    except jwt.PyJWTError:
        raise InvalidToken("signature or claims invalid") from None
    sub, role = claims.get("sub"), claims.get("role")
    if not isinstance(sub, str) or not sub or len(sub) > 200:
        raise InvalidToken("invalid subject")
    if role not in ROLES:
        raise InvalidToken("unknown role")
    email = claims.get("email")
    return Principal(user_id=sub, role=role, email=email if isinstance(email, str) else "")


class Authenticator:
    """Verifies tokens with the gateway's configured keys."""

    def __init__(self, keys: Mapping[str, str], issuer: str, audience: str, leeway: int) -> None:
        self.keys = dict(keys)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    def verify(self, token: str) -> Principal:
        return verify_token(
            token, keys=self.keys, issuer=self.issuer, audience=self.audience, leeway=self.leeway
        )


_bearer = HTTPBearer(auto_error=False, description="A JWT signed with HS256 (`make token`).")


async def optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller, or None when no Authorization header was sent; a bad token is refused."""
    if request.headers.get("authorization") is None:
        return None
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthenticated("expected a bearer token")
    authenticator: Authenticator = request.app.state.authenticator
    try:
        return authenticator.verify(credentials.credentials)
    except InvalidToken as exc:
        raise unauthenticated(str(exc)) from None


async def current_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    """The caller; 401 without a token."""
    if principal is None:
        raise unauthenticated()
    return principal


def require_roles(*roles: str) -> Callable[..., Any]:
    """Dependency: the caller, who must have one of `roles` (admin always passes); else 403."""
    allowed = frozenset(roles) | {"admin"}

    async def dependency(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        if principal.role not in allowed:
            raise forbidden(f"This requires the role {' or '.join(sorted(allowed))}")
        return principal

    return dependency


OptionalUser = Annotated[Principal | None, Depends(optional_principal)]
AnyUser = Annotated[Principal, Depends(current_principal)]
Company = Annotated[Principal, Depends(require_roles("company"))]
