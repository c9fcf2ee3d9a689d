"""Typed settings of the gateway, read from GATEWAY_* environment variables (fail fast)."""

from __future__ import annotations

import functools
import json
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from gateway.api.redirects import normalize_origin
from gateway.service_layer.auth import DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEV_JWT_KID, DEV_JWT_SECRET
from hirepay_platform.settings import ProcessSettings

# HS256 keys shorter than the hash output are brute-forceable (RFC 7518 section 3.2).
MIN_KEY_BYTES = 32


class GatewaySettings(ProcessSettings):
    """Everything the HTTP edge needs (with what every process has, ProcessSettings); a bad or
    missing value stops start-up with its name."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    env: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    jobs_target: str = "127.0.0.1:50053"
    payments_target: str = "127.0.0.1:50052"
    wallet_target: str = "127.0.0.1:50051"
    # JSON object {kid: secret}; several kids are valid at once during a key rotation.
    jwt_keys: SecretStr | None = None
    jwt_issuer: str = DEFAULT_ISSUER
    jwt_audience: str = DEFAULT_AUDIENCE
    jwt_leeway_seconds: int = 30
    # The longest lifetime (exp - iat, and exp - now) a token may have; longer ones are refused.
    jwt_max_lifetime_seconds: int = Field(default=86_400, ge=60)
    # create-with-payment attempts per user per minute (token bucket kept by jobs: all replicas).
    rate_limit_per_minute: int = Field(default=10, ge=1)
    rpc_timeout_seconds: float = Field(default=5.0, gt=0)
    # The saga (provider authorization, activation, capture) gets a longer budget than a read.
    saga_timeout_seconds: float = Field(default=30.0, gt=0)
    readiness_timeout_seconds: float = Field(default=1.0, gt=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Origins (scheme://host[:port], comma-separated) that returnUrl / cancelUrl may point to: the
    # customer is sent there after paying, so any other target would be an open redirect.
    allowed_redirect_origins: str = (
        "http://localhost:3000,http://127.0.0.1:3000,http://localhost:8080,http://127.0.0.1:8080"
    )
    # Swagger UI (/docs) and ReDoc (/redoc): on outside production, off in production unless enabled.
    docs_enabled: bool | None = None
    # The gateway is reached over TLS (directly or behind a TLS-terminating proxy): send HSTS.
    behind_tls: bool = False

    @field_validator("jobs_target", "payments_target", "wallet_target", mode="before")
    @classmethod
    def _empty_target_is_default(cls, value: object, info: object) -> object:
        # The dev stack passes "" for a service that does not exist yet; keep the default port then.
        if value == "":
            field = cls.model_fields[info.field_name]  # type: ignore[attr-defined]
            return field.default
        return value

    @field_validator("allowed_redirect_origins")
    @classmethod
    def _check_origins(cls, value: str) -> str:
        for origin in value.split(","):
            if origin.strip() and normalize_origin(origin.strip()) is None:
                raise ValueError(f"{origin.strip()!r} is not an origin (scheme://host[:port])")
        return value

    def redirect_origins(self) -> frozenset[tuple[str, str, int]]:
        """The allowed redirect origins, normalized (scheme, host, port): parsed once (the
        settings are frozen), not on every request that carries a redirect URL."""
        return _redirect_origins(self.allowed_redirect_origins)

    def docs_on(self) -> bool:
        return self.docs_enabled if self.docs_enabled is not None else self.env != "production"

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_keys(self) -> GatewaySettings:
        keys = self.signing_keys()
        if not keys:
            raise ValueError(
                "GATEWAY_JWT_KEYS is required unless GATEWAY_ENV=development"
                ' (a JSON object {"kid": "secret"})'
            )
        if self.env != "development" and DEV_JWT_KID in keys:
            raise ValueError(
                f"the development key id {DEV_JWT_KID!r} is refused outside development"
            )
        return self

    def signing_keys(self) -> dict[str, str]:
        """The HS256 keys by kid: GATEWAY_JWT_KEYS, or the development key in development."""
        if self.jwt_keys is None or not self.jwt_keys.get_secret_value().strip():
            return {DEV_JWT_KID: DEV_JWT_SECRET} if self.env == "development" else {}
        try:
            raw = json.loads(self.jwt_keys.get_secret_value())
        except ValueError:
            raise ValueError("GATEWAY_JWT_KEYS must be a JSON object {kid: secret}") from None
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in raw.items()
        ):
            raise ValueError("GATEWAY_JWT_KEYS must be a JSON object {kid: secret}")
        short = [k for k, v in raw.items() if len(v.encode()) < MIN_KEY_BYTES]
        if short:
            raise ValueError(f"JWT keys must be at least {MIN_KEY_BYTES} bytes (kid {short[0]})")
        return dict(raw)


@functools.cache
def _redirect_origins(setting: str) -> frozenset[tuple[str, str, int]]:
    origins = {normalize_origin(o.strip()) for o in setting.split(",")}
    return frozenset(o for o in origins if o is not None)
