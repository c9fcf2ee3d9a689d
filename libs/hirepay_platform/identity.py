"""Who is calling: signed service tokens between processes and the gateway's signed actor assertions.

Every gRPC call between Hirepay processes carries, in its metadata,

- `x-hirepay-service-token`: a short-lived HS256 JWT (`iss` = calling service, `aud` = callee,
  `iat`, `exp`, `typ: service`) minted by the platform client from the deployment secret
  `HIREPAY_SERVICE_TOKEN_SECRET`;
- when the call is made for an end user, `x-hirepay-actor`: a short-lived HS256 JWT minted only
  by the gateway after it verified the user's own JWT (`iss: gateway`, `aud` = callee, `sub`,
  `role`, `typ: actor`).

The platform server interceptor verifies both before any servicer runs (UNAUTHENTICATED
otherwise), checks the caller against the service's `AccessPolicy` (PERMISSION_DENIED), and exposes
the verified `Caller` through `current_caller()`. Request fields naming an actor are never trusted.

Each token type is signed with its own key derived from the secret, so a service token can never
pass as an actor assertion. All holders of the secret can mint both (a shared-secret scheme): the
secret is a deployment secret given to Hirepay's own processes only.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import jwt

from hirepay_platform.errors import ErrorKind, HirepayError, PermissionDenied
from hirepay_platform.expiring import DEFAULT_MAX_ENTRIES, ExpiringCache

SECRET_ENV = "HIREPAY_SERVICE_TOKEN_SECRET"
SERVICE_TOKEN_HEADER = "x-hirepay-service-token"
ACTOR_HEADER = "x-hirepay-actor"
# The one process that turns an end user's verified JWT into an actor assertion.
EDGE = "gateway"
MIN_SECRET_BYTES = 32
TOKEN_TTL_SECONDS = 60
# A token living longer than this is refused even when correctly signed (limits a leaked token).
MAX_TOKEN_LIFETIME_SECONDS = 300
LEEWAY_SECONDS = 5
_ALGORITHM = "HS256"


class Unauthenticated(HirepayError):
    """The call carries no valid service token, or a bad actor assertion."""

    kind = ErrorKind.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class CallerNotAllowed(PermissionDenied):
    """The calling service may not call this RPC."""

    reason = "CALLER_NOT_ALLOWED"


@dataclass(frozen=True)
class Actor:
    """An end user as the gateway vouched for them; an empty user_id is anonymous."""

    user_id: str = ""
    role: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


ANONYMOUS = Actor()


@dataclass(frozen=True)
class Caller:
    """The verified caller of the current RPC."""

    # The calling service (the service token's `iss`).
    service: str
    # The end user the gateway vouched for; None when the call carries no actor assertion.
    actor: Actor | None = None

    @property
    def is_edge(self) -> bool:
        """The call came through the gateway: it acts for an (maybe anonymous) end user."""
        return self.service == EDGE

    @property
    def user(self) -> Actor:
        """The end user behind the call (anonymous when none was vouched for)."""
        return self.actor or ANONYMOUS

    def reaches(self, owner_id: str) -> bool:
        """SEC-2: may this caller reach an object owned by `owner_id`? An internal service acting
        for itself may (its access is granted by the RPC's policy); through the gateway only the
        owner or an admin."""
        if not self.is_edge and self.actor is None:
            return True
        user = self.user
        return user.is_admin or (bool(owner_id) and owner_id == user.user_id)


_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "hirepay_caller", default=None
)
# The end user the current task acts for (set by the gateway per HTTP request); the client sends
# it as an actor assertion on every call made in this context.
_OUTGOING_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar(
    "hirepay_outgoing_actor", default=None
)


def current_caller() -> Caller:
    """The verified caller of the RPC being served (set by the platform interceptor)."""
    caller = _CALLER.get()
    if caller is None:
        # Reached only when code that needs a caller runs outside an intercepted RPC.
        raise Unauthenticated("no verified caller for this call")
    return caller


# Bind the verified caller for the current task (the interceptor's job), and undo that with the
# token it returned: the context variable's own methods, not functions calling them (two Python
# calls fewer per RPC, issue 13).
set_current_caller: Callable[[Caller | None], contextvars.Token[Caller | None]] = _CALLER.set
reset_current_caller: Callable[[contextvars.Token[Caller | None]], None] = _CALLER.reset


def act_for(actor: Actor | None) -> None:
    """Calls made from now on in this context carry `actor` as a signed assertion (gateway only:
    set once the user's own token has been verified)."""
    _OUTGOING_ACTOR.set(actor)


# The end user calls made now act for (None: none): the context variable's own method, not a
# function calling it (a Python call fewer per client call, issue 13).
outgoing_actor: Callable[[], Actor | None] = _OUTGOING_ACTOR.get


def _derive(secret: str, purpose: str) -> bytes:
    """A key per token type, so one type can never be presented as the other."""
    return hmac.new(secret.encode(), f"hirepay/{purpose}/v1".encode(), hashlib.sha256).digest()


def check_secret(secret: str) -> str:
    """The secret if it is long enough; else ValueError naming the variable."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"{SECRET_ENV} must be at least {MIN_SECRET_BYTES} bytes")
    return secret


@dataclass
class TokenMinter:
    """Mints this process's service tokens (and, at the edge, actor assertions).

    Signing is the cost of every call, so a minted token is reused for the first half of its
    life: a service token per audience, an actor assertion per (audience, user, role) - never for
    another user or role. A reused token still has at least half its TTL left when sent, so the
    callee's expiry check is unchanged; the tokens carry no nonce, so the callee never told two
    uses of one token apart anyway (a token is a bearer proof for its lifetime, not a one-time
    one)."""

    service: str
    secret: str
    ttl: int = TOKEN_TTL_SECONDS
    # The wall clock tokens are dated by (seconds since the epoch).
    clock: Callable[[], float] = time.time
    _service_key: bytes = field(init=False, repr=False)
    _actor_key: bytes = field(init=False, repr=False)
    # Tokens to reuse until half their life has passed: by audience, and by (audience, user id,
    # role) for actor assertions.
    _cache: ExpiringCache[str, str] = field(default_factory=ExpiringCache, init=False, repr=False)
    _actor_cache: ExpiringCache[tuple[str, str, str], str] = field(
        default_factory=ExpiringCache, init=False, repr=False
    )

    def __post_init__(self) -> None:
        check_secret(self.secret)
        self._service_key = _derive(self.secret, "service-token")
        self._actor_key = _derive(self.secret, "actor-assertion")

    def service_token(self, audience: str, *, now: float | None = None) -> str:
        """A service token for calls to `audience` (`now`: mint one dated then, uncached)."""
        if now is not None:
            return self._mint_service(audience, now)
        return self._service_token(audience, self.clock())[0]

    def actor_assertion(self, audience: str, actor: Actor, *, now: float | None = None) -> str:
        """The assertion that calls to `audience` act for `actor` (`now`: dated then, uncached)."""
        if now is not None:
            return self._mint_actor(audience, actor, now)
        return self._actor_assertion(audience, actor, self.clock())[0]

    def signed(
        self, audience: str, actor: Actor | None, at: float
    ) -> tuple[tuple[tuple[str, str], ...], float]:
        """The metadata of a call to `audience` made at `at` (this minter's clock) for `actor`
        (None: none), as `metadata` gives it, and until when it may be sent again: the moment
        the first of its tokens is no longer handed out (half its life, see the class). A
        client keeps it that long instead of asking for each token on every call (issue 13)."""
        token, until = self._service_token(audience, at)
        if actor is None:
            return ((SERVICE_TOKEN_HEADER, token),), until
        assertion, actor_until = self._actor_assertion(audience, actor, at)
        return (
            ((SERVICE_TOKEN_HEADER, token), (ACTOR_HEADER, assertion)),
            min(until, actor_until),
        )

    def _service_token(self, audience: str, at: float) -> tuple[str, float]:
        """The service token for `audience` handed out at `at`, and until when it is."""
        found = self._cache.entry(audience, at)
        if found is not None:
            return found
        token = self._mint_service(audience, at)
        until = self._reuse_until(at)
        self._cache.put(audience, token, until, at)
        return token, until

    def _actor_assertion(self, audience: str, actor: Actor, at: float) -> tuple[str, float]:
        """The actor assertion for `audience` and `actor` handed out at `at`, and until when."""
        key = (audience, actor.user_id, actor.role)
        found = self._actor_cache.entry(key, at)
        if found is not None:
            return found
        token = self._mint_actor(audience, actor, at)
        until = self._reuse_until(at)
        self._actor_cache.put(key, token, until, at)
        return token, until

    def _mint_service(self, audience: str, at: float) -> str:
        claims = {
            "iss": self.service,
            "aud": audience,
            "iat": int(at),
            "exp": int(at) + self.ttl,
            "typ": "service",
        }
        return jwt.encode(claims, self._service_key, algorithm=_ALGORITHM)

    def _mint_actor(self, audience: str, actor: Actor, at: float) -> str:
        claims = {
            "iss": self.service,
            "aud": audience,
            "sub": actor.user_id,
            "role": actor.role,
            "iat": int(at),
            "exp": int(at) + self.ttl,
            "typ": "actor",
        }
        return jwt.encode(claims, self._actor_key, algorithm=_ALGORITHM)

    def _reuse_until(self, at: float) -> float:
        """A token dated `at` is handed out again only while more than half its life is left."""
        return int(at) + self.ttl / 2

    def metadata(self, audience: str, actor: Actor | None = None) -> list[tuple[str, str]]:
        """The metadata of one call to `audience`: the service token, and the actor assertion
        when `actor` (default: the context's outgoing actor) is set."""
        items = [(SERVICE_TOKEN_HEADER, self.service_token(audience))]
        who = actor if actor is not None else outgoing_actor()
        if who is not None:
            items.append((ACTOR_HEADER, self.actor_assertion(audience, who)))
        return items


_minter: TokenMinter | None = None


def configure(service: str, secret: str) -> TokenMinter:
    """Set this process's identity (at start-up): the clients it opens sign as `service`."""
    global _minter
    _minter = TokenMinter(service, secret)
    return _minter


def process_minter() -> TokenMinter:
    """This process's minter; a process that calls others without an identity is a bug."""
    if _minter is None:
        raise RuntimeError(
            "service identity not configured: call hirepay_platform.identity.configure() at start-up"
        )
    return _minter


@dataclass(frozen=True)
class AccessPolicy:
    """Which calling services may call which RPCs: `per_method` by RPC name, else `default`."""

    default: frozenset[str]
    per_method: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(
        cls, default: Collection[str], per_method: Mapping[str, Collection[str]] | None = None
    ) -> AccessPolicy:
        return cls(
            frozenset(default),
            {name: frozenset(callers) for name, callers in (per_method or {}).items()},
        )

    def allows(self, service: str, method: str) -> bool:
        return service in self.per_method.get(method, self.default)


class ServiceAuthenticator:
    """The server side: verifies the tokens of an incoming call to service `service`.

    A token verified once is remembered by its exact text (with its type) until it expires:
    callers reuse a token for half its life (TokenMinter), and checking an HMAC and the claims
    again would find the same. A remembered token is still refused once `exp` (plus the leeway)
    has passed, and a token differing in any byte is verified afresh; refusals are not remembered.
    The access policy is checked on every call (it depends on the RPC)."""

    def __init__(
        self,
        service: str,
        secret: str,
        policy: AccessPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_secret(secret)
        self.service = service
        self.policy = policy
        self.clock = clock
        self._service_key = _derive(secret, "service-token")
        self._actor_key = _derive(secret, "actor-assertion")
        # (type, token) -> its verified claims, until `exp` plus the leeway.
        self._verified: ExpiringCache[tuple[str, str], Mapping[str, object]] = ExpiringCache()
        # The Caller of each verified service, and of each (service, user, role) the gateway
        # vouched for: immutable, so one is handed to every call it describes. Making a frozen
        # dataclass (two for an actor) was half of authenticate's cost on every call (issue 13).
        # Bounded as _verified is: emptied when full (they are cheap to remake).
        self._callers: dict[tuple[str, str, str] | str, Caller] = {}
        # (service token, actor assertion or None) of a verified call -> its Caller, and when
        # the first of the two expires (`exp` plus the leeway): see authenticate. Bounded as
        # _callers is.
        self._authenticated: dict[tuple[str, str | None], tuple[Caller, float]] = {}

    def _decode(
        self, token: str, key: bytes, typ: str, required: Sequence[str]
    ) -> Mapping[str, object]:
        now = self.clock()
        remembered = self._verified.get((typ, token), now)
        if remembered is not None:
            return remembered
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],
                audience=self.service,
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "aud", "iat", "exp", *required]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid {typ} token: {exc}") from None
        if claims.get("typ") != typ:
            raise Unauthenticated(f"invalid {typ} token: wrong type")
        lifetime = int(claims["exp"]) - int(claims["iat"])
        if lifetime > MAX_TOKEN_LIFETIME_SECONDS:
            raise Unauthenticated(f"invalid {typ} token: lives too long")
        # PyJWT refuses when exp <= now - leeway: the token is good while now < exp + leeway.
        expires = int(claims["exp"]) + LEEWAY_SECONDS
        if now >= expires:
            # Checked on this process's clock too, so a remembered token and a fresh one agree.
            raise Unauthenticated(f"invalid {typ} token: Signature has expired")
        self._verified.put((typ, token), claims, expires, now)
        return claims

    def authenticate(
        self, metadata: Sequence[tuple[str, str | bytes]] | None, method: str
    ) -> Caller:
        """The verified caller of `method`; Unauthenticated or CallerNotAllowed otherwise.

        A call carrying the very tokens of a call authenticated before (callers reuse theirs for
        half their life) is the same Caller until the first of them expires: one look-up
        instead of one per token (issue 13); the access policy is still checked on every call,
        and anything else (a token differing in any byte, a second token, an expired one) goes
        the whole way below.

        The service tokens and actor assertions the call carries (text values, any key case) are
        picked here in one pass, every other item (the trace context, the user agent) skipped:
        inline, not a function of their own (a Python call per RPC fewer, issue 13)."""
        tokens: list[str] = []
        assertions: list[str] = []
        for key, value in metadata or ():
            if isinstance(value, str):  # (binary values, bytes, are never tokens)
                name = key.lower()
                if name == SERVICE_TOKEN_HEADER:
                    tokens.append(value)
                elif name == ACTOR_HEADER:
                    assertions.append(value)
        if len(tokens) == 1 and len(assertions) < 2:
            known = self._authenticated.get((tokens[0], assertions[0] if assertions else None))
            if known is not None and self.clock() < known[1]:
                caller = known[0]
                if self.policy is not None and not self.policy.allows(caller.service, method):
                    raise CallerNotAllowed(f"{caller.service} may not call {self.service}.{method}")
                return caller
        return self._verify(tokens, assertions, method)

    def _verify(self, tokens: list[str], assertions: list[str], method: str) -> Caller:
        """authenticate's whole way: each token verified (or found verified), the caller
        checked against the policy, and remembered with its tokens."""
        if len(tokens) != 1:
            raise Unauthenticated("a service token is required")
        claims = self._decode(tokens[0], self._service_key, "service", ())
        service = str(claims["iss"])
        if self.policy is not None and not self.policy.allows(service, method):
            raise CallerNotAllowed(f"{service} may not call {self.service}.{method}")
        expires = int(claims["exp"]) + LEEWAY_SECONDS  # (as _decode judges it)
        if not assertions:
            caller = self._callers.get(service)
            if caller is None:
                caller = self._remember(service, Caller(service))
            self._known(tokens[0], None, caller, expires)
            return caller
        if len(assertions) > 1 or service != EDGE:
            raise Unauthenticated("only the gateway vouches for an end user")
        actor = self._decode(assertions[0], self._actor_key, "actor", ("sub", "role"))
        if actor["iss"] != EDGE:
            raise Unauthenticated("invalid actor token: wrong issuer")
        sub, role = actor["sub"], actor["role"]
        if not isinstance(sub, str) or not isinstance(role, str):
            raise Unauthenticated("invalid actor token: bad claims")
        key = (service, sub, role)
        caller = self._callers.get(key)
        if caller is None:
            caller = self._remember(key, Caller(service, Actor(sub, role)))
        self._known(
            tokens[0], assertions[0], caller, min(expires, int(actor["exp"]) + LEEWAY_SECONDS)
        )
        return caller

    def _known(self, token: str, assertion: str | None, caller: Caller, expires: float) -> None:
        """Remember the caller a call's tokens were verified as, until the first expires."""
        if len(self._authenticated) >= DEFAULT_MAX_ENTRIES:
            self._authenticated.clear()
        self._authenticated[(token, assertion)] = (caller, expires)

    def _remember(self, key: tuple[str, str, str] | str, caller: Caller) -> Caller:
        if len(self._callers) >= DEFAULT_MAX_ENTRIES:
            self._callers.clear()
        self._callers[key] = caller
        return caller
