"""Fixtures of the platform's tests."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Connection

from tests.support.pg_round_trips import round_trips  # noqa: F401 (a fixture, counted round trips)


@pytest.fixture
def wrapped(monkeypatch: pytest.MonkeyPatch) -> list[Connection]:
    """Every SQLAlchemy Connection made (engine.connect() or a pooled connection wrapped)."""
    made: list[Connection] = []
    init = Connection.__init__

    def counted(self: Connection, *args: Any, **kw: Any) -> None:
        made.append(self)
        init(self, *args, **kw)

    monkeypatch.setattr(Connection, "__init__", counted)
    return made
