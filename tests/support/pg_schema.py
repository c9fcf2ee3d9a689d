"""A test database created with the tables of a SQLAlchemy MetaData."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData

from hirepay_platform.db import create_engine


async def database_with(make_database: Any, name: str, metadata: MetaData) -> str:
    """The URL of a new database `name` (the `make_database` fixture) holding `metadata`'s
    tables."""
    url = make_database(name)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
    return url
