"""Shared fixtures: a real PostgreSQL server (DATABASE_URL, else embedded) and fresh databases."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from hirepay_dev import pg
from hirepay_dev.procs import ensure_service_token_secret
from hirepay_dev.services import SPECS, prepare_database

# One service-token secret per test run, shared by every process the tests start (and by the
# settings objects tests build in this process): generated, never a fixed value.
ensure_service_token_secret()


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the PostgreSQL server every test uses (its `postgres` database)."""
    return pg.server_url()


@pytest.fixture(scope="session")
def make_database(pg_server_url: str) -> Callable[[str], str]:
    """Factory: a new empty database named after `prefix`; returns its URL."""

    def make(prefix: str) -> str:
        return pg.create_database(pg_server_url, f"{prefix}_{uuid.uuid4().hex[:10]}")

    return make


@pytest.fixture(scope="session")
def make_service_database(pg_server_url: str) -> Callable[[str], str]:
    """Factory: a new database for service `name`, migrated to head with its Alembic scripts."""

    def make(name: str) -> str:
        return prepare_database(
            SPECS[name], pg_server_url, name=f"t_{name}_{uuid.uuid4().hex[:10]}", fresh=True
        )

    return make
