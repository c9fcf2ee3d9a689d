"""Counting the round trips asyncpg makes to PostgreSQL (issue 13): what a use case costs the
database, pinned by tests on the wire's side of the driver. One counter for every service's tests."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from asyncpg import prepared_stmt

_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")


class RoundTrips:
    """Each round trip asyncpg makes: a simple query (BEGIN, COMMIT, ...), a prepare, or an
    execution of a prepared statement (one Bind/Execute/Sync; an executemany counts once).
    Recording from the start, or only inside `with round_trips:` (which starts from nothing)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.recording = True

    def note(self, kind: str, sql: str) -> None:
        if self.recording:
            self.sent.append((kind, " ".join(sql.split())))

    def kinds(self) -> collections.Counter[str]:
        return collections.Counter(kind for kind, _ in self.sent)

    def simple(self, word: str) -> int:
        return sum(
            1 for kind, sql in self.sent if kind == "simple" and sql.upper().startswith(word)
        )

    @property
    def transaction_control(self) -> list[str]:
        """BEGIN, COMMIT and ROLLBACK as sent, in order."""
        return [
            sql
            for kind, sql in self.sent
            if kind == "simple" and sql.upper().startswith(_TRANSACTION_CONTROL)
        ]

    @property
    def statements(self) -> list[str]:
        """Every other statement executed (prepares, which carry no work, left out), in order."""
        return [
            sql
            for kind, sql in self.sent
            if kind == "statement"
            or (kind == "simple" and not sql.upper().startswith(_TRANSACTION_CONTROL))
        ]

    def __enter__(self) -> RoundTrips:
        self.sent.clear()
        self.recording = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.recording = False


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    trips = RoundTrips()
    execute = asyncpg.connection.Connection.execute
    executemany = asyncpg.connection.Connection.executemany
    prepare = asyncpg.connection.Connection.prepare
    fetch = prepared_stmt.PreparedStatement.fetch

    async def counted_execute(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        trips.note("simple", query)
        return await execute(self, query, *args, **kw)

    async def counted_executemany(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        trips.note("statement", query)
        return await executemany(self, query, *args, **kw)

    async def counted_prepare(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        trips.note("prepare", query)
        return await prepare(self, query, *args, **kw)

    async def counted_fetch(self: Any, *args: Any, **kw: Any) -> Any:
        trips.note("statement", self.get_query())
        return await fetch(self, *args, **kw)

    monkeypatch.setattr(asyncpg.connection.Connection, "execute", counted_execute)
    monkeypatch.setattr(asyncpg.connection.Connection, "executemany", counted_executemany)
    monkeypatch.setattr(asyncpg.connection.Connection, "prepare", counted_prepare)
    monkeypatch.setattr(prepared_stmt.PreparedStatement, "fetch", counted_fetch)
    yield trips
