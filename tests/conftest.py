"""Shared fixtures: a real PostgreSQL server (DATABASE_URL, else embedded) and fresh databases."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from hirepay_dev import pg
from hirepay_dev.procs import ensure_service_token_secret
from tests.support.databases import ServiceDatabases, SessionDatabases

# One service-token secret per test run, shared by every process the tests start (and by the
# settings objects tests build in this process): generated, never a fixed value.
ensure_service_token_secret()


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the PostgreSQL server every test uses (its `postgres` database)."""
    return pg.server_url()


@pytest.fixture(scope="session")
def test_databases(pg_server_url: str) -> Iterator[SessionDatabases]:
    """Every database the session's factories and stacks create; dropped at the session's end."""
    created = SessionDatabases()
    yield created
    pg.drop_databases(pg_server_url, created.names())


@pytest.fixture(scope="session")
def make_database(pg_server_url: str, test_databases: SessionDatabases) -> Callable[[str], str]:
    """Factory: a new empty database named after `prefix`; returns its URL."""

    def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        test_databases.add(name)
        return pg.create_database(pg_server_url, name)

    return make


@pytest.fixture(scope="session")
def make_service_database(
    pg_server_url: str, test_databases: SessionDatabases
) -> Iterator[ServiceDatabases]:
    """Factory: a new database for service `name`, migrated to head with its Alembic scripts (a copy
    of a template migrated once per session; tests.support.databases.ServiceDatabases)."""
    factory = ServiceDatabases(pg_server_url, test_databases)
    try:
        yield factory
    finally:
        factory.close()
