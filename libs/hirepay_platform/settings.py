"""Typed settings from the environment, one object per service, failing fast on missing values."""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from hirepay_platform.identity import SECRET_ENV, check_secret

# Connections each service keeps open to its database, and how many more it may open for a burst.
# SQLAlchemy's pool closes an overflow connection when it is returned to a pool that already holds
# `pool_size` idle ones, so every connection above the pool is a PostgreSQL backend forked,
# authenticated and warmed (types, prepared statements) per burst: at 32 concurrent postings and a
# pool of 10 that cost more CPU than the postings' statements; with 32 + 16 overflow and a slow
# provider (128 postings in flight) payments reopened 0.2 backends per posting (issue 13). So the
# whole cap is the pool and there is no overflow: connections open lazily, the first time that
# many are in use at once, and stay open; calls above the cap wait for a connection.
DEFAULT_POOL_SIZE = 48
DEFAULT_MAX_OVERFLOW = 0


class ProcessSettings(BaseSettings):
    """Settings every Hirepay process has, the gateway's as the services': its log level, where
    its spans go and the secret its gRPC calls are signed with. Subclass with `env_prefix`."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    log_level: str = "INFO"
    # Where spans go: "none", "console", or "file:/path/spans.jsonl" (shared by all services).
    traces: str = Field(
        default="none", validation_alias=AliasChoices("HIREPAY_TRACES", "OTEL_TRACES_EXPORTER")
    )
    # Signs and verifies the service tokens and actor assertions of every gRPC call (identity.py).
    # Required in every mode, never defaulted: `make run` and the tests generate one per run.
    service_token_secret: SecretStr = Field(validation_alias=SECRET_ENV)

    @field_validator("service_token_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        check_secret(value.get_secret_value())
        return value


class ServiceSettings(ProcessSettings):
    """Settings every gRPC service has. Subclass with `env_prefix` (e.g. WALLET_) and add fields."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int
    metrics_port: int
    # Loopback by default (a developer's machine); a pod sets 0.0.0.0 so Prometheus can scrape it.
    metrics_host: str = "127.0.0.1"
    # Required: a service without its database refuses to start.
    database_url: SecretStr
    db_pool_size: int = DEFAULT_POOL_SIZE
    db_max_overflow: int = DEFAULT_MAX_OVERFLOW
    shutdown_grace_seconds: float = 10.0
    # Readiness is re-checked over time, not only at start-up: each dependency (the database)
    # every interval, each check given the timeout; a failure turns gRPC health NOT_SERVING.
    readiness_interval_seconds: float = Field(default=5.0, gt=0)
    readiness_timeout_seconds: float = Field(default=2.0, gt=0)


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment; on a missing or bad value, say which and exit."""
    try:
        return cls()
    except PydanticValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            # An alias such as HIREPAY_SERVICE_TOKEN_SECRET is already the variable's full name.
            variable = name if name.isupper() else f"{prefix}{name.upper()}"
            problems.append(f"  {variable}: {err['msg']}")
        sys.stderr.write(f"{cls.__name__}: invalid configuration\n" + "\n".join(problems) + "\n")
        raise SystemExit(2) from None
