"""The databases a test session creates on the PostgreSQL server, so that it can drop them."""

from __future__ import annotations

import threading


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
