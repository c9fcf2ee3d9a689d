"""Counting the round trips asyncpg makes to PostgreSQL (issue 13): what a use case costs the
database, pinned by tests on the wire's side of the driver."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from asyncpg import prepared_stmt


class RoundTrips:
    """Each round trip asyncpg makes: a simple query (BEGIN, COMMIT, ...), a prepare, or an
    execution of a prepared statement (one Bind/Execute/Sync)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def kinds(self) -> collections.Counter[str]:
        return collections.Counter(kind for kind, _ in self.sent)

    def simple(self, word: str) -> int:
        return sum(1 for kind, sql in self.sent if kind == "simple" and sql.startswith(word))


@pytest.fixture
def round_trips(monkeypatch) -> Iterator[RoundTrips]:
    trips = RoundTrips()
    execute = asyncpg.connection.Connection.execute
    prepare = asyncpg.connection.Connection.prepare
    fetch = prepared_stmt.PreparedStatement.fetch

    async def counted_execute(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        trips.sent.append(("simple", query.strip().upper()))
        return await execute(self, query, *args, **kw)

    async def counted_prepare(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        trips.sent.append(("prepare", query))
        return await prepare(self, query, *args, **kw)

    async def counted_fetch(self: Any, *args: Any, **kw: Any) -> Any:
        trips.sent.append(("statement", self.get_query()))
        return await fetch(self, *args, **kw)

    monkeypatch.setattr(asyncpg.connection.Connection, "execute", counted_execute)
    monkeypatch.setattr(asyncpg.connection.Connection, "prepare", counted_prepare)
    monkeypatch.setattr(prepared_stmt.PreparedStatement, "fetch", counted_fetch)
    yield trips
