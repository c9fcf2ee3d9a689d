"""The databases a test session creates on the PostgreSQL server, so that it can drop them, and the
factory of its service databases (copies of a migrated template)."""

from __future__ import annotations

import subprocess
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from hirepay_dev import pg
from hirepay_dev.services import SPECS, prepare_database


class SessionDatabases:
    """The databases this test session created on the server, dropped when it ends.

    A checkout's embedded server outlives its test runs; databases left there cost autovacuum
    work on every later run and benchmark (see `pg.drop_databases`). Only this session's own are
    dropped: another test run in the same checkout shares the server."""

    def __init__(self) -> None:
        self._names: list[str] = []
        self._lock = threading.Lock()

    def add(self, *names: str) -> None:
        with self._lock:
            self._names.extend(names)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._names)


class ServiceDatabases:
    """Factory: a new database for a service, migrated to head with its Alembic scripts.

    The service's Alembic scripts run once per session, into a template database nothing else
    connects to; each database handed out is a `CREATE DATABASE ... TEMPLATE` copy of it (the
    same schema and alembic_version, its own rows). The suite asks for about a hundred of these
    databases, and copying one takes a fraction of the time of running every migration again.
    Migrations themselves stay tested: the template is built by the real `alembic upgrade head`.

    A copy (a third to half a second, mostly the server writing it) is made ahead in a thread
    once a service's first is handed out, so the next test that asks for one finds it made; at
    most one per service is made ahead, and it is dropped with the session's others."""

    def __init__(self, server_url: str, created: SessionDatabases) -> None:
        self._server_url = server_url
        self._created = created
        self._templates: dict[str, str] = {}
        # Tests call the factory from worker threads too (asyncio.to_thread); build a template once.
        self._template_lock = threading.Lock()
        self._ahead: dict[str, Future[str]] = {}
        self._ahead_lock = threading.Lock()
        self._maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database-ahead")

    def __call__(self, name: str) -> str:
        """The URL of a new database of service `name` (its copy made ahead, when there is one)."""
        with self._ahead_lock:
            ahead = self._ahead.pop(name, None)
        url = ahead.result() if ahead is not None else self._copy(name)
        with self._ahead_lock:
            if name not in self._ahead:
                self._ahead[name] = self._maker.submit(self._copy, name)
        return url

    def made_ahead(self, name: str) -> str | None:
        """The URL of the copy of service `name` made ahead (once it is made), if one is."""
        with self._ahead_lock:
            ahead = self._ahead.get(name)
        return ahead.result() if ahead is not None else None

    def close(self) -> None:
        """Wait for the copies being made ahead (they are dropped with the session's others)."""
        self._maker.shutdown(wait=True)

    def _template(self, name: str) -> str:
        with self._template_lock:
            if name not in self._templates:
                database = f"t_tpl_{name}_{uuid.uuid4().hex[:10]}"
                self._created.add(database)
                prepare_database(SPECS[name], self._server_url, name=database, fresh=True)
                self._templates[name] = database
            return self._templates[name]

    def _copy(self, name: str) -> str:
        source = self._template(name)
        database = f"t_{name}_{uuid.uuid4().hex[:10]}"
        self._created.add(database)
        admin = pg.libpq_url(pg.with_database(self._server_url, "postgres"))
        sql = f'CREATE DATABASE "{database}" TEMPLATE "{source}"'
        psql = [str(pg.bin_dir() / "psql"), admin, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]
        subprocess.run(psql, check=True, capture_output=True)
        return pg.with_database(self._server_url, database)
