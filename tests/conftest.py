"""Shared fixtures: a real PostgreSQL server (DATABASE_URL, else embedded) and fresh databases."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from hirepay_dev import pg
from hirepay_dev.procs import ensure_service_token_secret
from hirepay_dev.services import SPECS, prepare_database
from tests.support.databases import SessionDatabases

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


def _psql(server_url: str, sql: str) -> None:
    """Run one statement on the server's `postgres` database."""
    admin = pg.libpq_url(pg.with_database(server_url, "postgres"))
    subprocess.run(
        [str(pg.bin_dir() / "psql"), admin, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def make_service_database(
    pg_server_url: str, test_databases: SessionDatabases
) -> Iterator[Callable[[str], str]]:
    """Factory: a new database for service `name`, migrated to head with its Alembic scripts.

    The service's Alembic scripts run once per session, into a template database nothing else
    connects to; each database handed out is a `CREATE DATABASE ... TEMPLATE` copy of it (the
    same schema and alembic_version, its own rows). The suite asks for about a hundred of these
    databases, and copying one takes a fraction of the time of running every migration again.
    Migrations themselves stay tested: the template is built by the real `alembic upgrade head`."""
    templates: dict[str, str] = {}
    # Tests call the factory from worker threads too (asyncio.to_thread); build a template once.
    lock = threading.Lock()

    def template(name: str) -> str:
        with lock:
            if name not in templates:
                database = f"t_tpl_{name}_{uuid.uuid4().hex[:10]}"
                test_databases.add(database)
                prepare_database(SPECS[name], pg_server_url, name=database, fresh=True)
                templates[name] = database
            return templates[name]

    def make(name: str) -> str:
        source = template(name)
        database = f"t_{name}_{uuid.uuid4().hex[:10]}"
        test_databases.add(database)
        _psql(pg_server_url, f'CREATE DATABASE "{database}" TEMPLATE "{source}"')
        return pg.with_database(pg_server_url, database)

    yield make
