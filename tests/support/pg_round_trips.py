"""Counting the round trips asyncpg makes to PostgreSQL (issue 13): what a use case costs the
database, pinned by tests on the wire's side of the driver. One counter for every service's tests."""

from __future__ import annotations

import collections
import sys
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


class _CountedProtocol:
    """A connection's asyncpg protocol, as code outside asyncpg reaches it (`Connection._protocol`):
    the platform's hot statements send their BEGIN, statement and COMMIT by the protocol itself
    (db._execute_hot, db._Begun), past asyncpg's Python methods that the fixture counts; those
    round trips are noted here. What asyncpg's own Python asks of its protocol is left to the
    counted methods (noted there once, as before)."""

    __slots__ = ("_protocol", "_trips")

    def __init__(self, protocol: Any, trips: RoundTrips) -> None:
        self._protocol = protocol
        self._trips = trips

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)

    def query(self, query: str, timeout: Any) -> Any:
        if _from_outside_asyncpg():
            self._trips.note("simple", query)
        return self._protocol.query(query, timeout)

    def bind_execute(self, state: Any, *args: Any, **kw: Any) -> Any:
        if _from_outside_asyncpg():
            self._trips.note("statement", state.query)
        return self._protocol.bind_execute(state, *args, **kw)

    def bind_execute_many(self, state: Any, *args: Any, **kw: Any) -> Any:
        if _from_outside_asyncpg():
            self._trips.note("statement", state.query)
        return self._protocol.bind_execute_many(state, *args, **kw)

    def prepare(self, stmt_name: Any, query: str, *args: Any, **kw: Any) -> Any:
        if _from_outside_asyncpg():
            self._trips.note("prepare", query)
        return self._protocol.prepare(stmt_name, query, *args, **kw)


def _from_outside_asyncpg() -> bool:
    """Whether the protocol's caller (two frames up: past _CountedProtocol's method) is code
    outside asyncpg's own modules."""
    module = sys._getframe(2).f_globals.get("__name__", "")
    return not (module == "asyncpg" or module.startswith("asyncpg."))


def _count_protocol_calls(monkeypatch: pytest.MonkeyPatch, trips: RoundTrips) -> None:
    """Every connection's `_protocol` (those opened before the fixture too) read through a
    _CountedProtocol while the fixture lasts."""
    connection_class = asyncpg.connection.Connection
    slot = connection_class.__dict__["_protocol"]  # the __slots__ member's descriptor

    def get(connection: Any) -> Any:
        protocol = slot.__get__(connection, connection_class)
        return None if protocol is None else _CountedProtocol(protocol, trips)

    def set_(connection: Any, protocol: Any) -> None:
        slot.__set__(connection, protocol)

    monkeypatch.setattr(connection_class, "_protocol", property(get, set_))


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    trips = RoundTrips()
    _count_protocol_calls(monkeypatch, trips)
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
