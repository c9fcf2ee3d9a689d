"""The async SQLAlchemy engine, session factory and unit of work, built at start-up (never at import)."""

from __future__ import annotations

import re
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase


def async_url(url: str) -> str:
    """Turn any postgres URL into the asyncpg dialect's."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+asyncpg://", url)


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10) -> AsyncEngine:
    """An asyncpg engine with a bounded pool."""
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=10,
        # Statements are short; a stuck one should fail rather than hold a pooled connection forever.
        connect_args={"command_timeout": 30, "server_settings": {"application_name": "hirepay"}},
    )


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (no implicit refresh in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    """Declarative base; each service keeps its own metadata by subclassing it once."""

    __abstract__ = True


class SqlAlchemyUnitOfWork:
    """One local transaction. `async with uow:` rolls back unless `await uow.commit()` was called.

    Services subclass it and attach their repositories in `_attach(session)`.
    """

    session: AsyncSession

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory
        self._committed = False

    def _attach(self, session: AsyncSession) -> None:
        """Create repositories bound to the session (override)."""

    async def __aenter__(self) -> Self:
        self.session = self._session_factory()
        self._committed = False
        self._attach(self.session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed:
                await self.session.rollback()
        finally:
            await self.session.close()

    async def commit(self) -> None:
        await self.session.commit()
        self._committed = True

    async def rollback(self) -> None:
        await self.session.rollback()
