"""Alembic helpers: the shared async env.py body and a programmatic upgrade."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from hirepay_platform.db import async_url


def alembic_config(script_location: Path | str, url: str) -> Config:
    """An Alembic config for one service's migrations folder and database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    # ConfigParser interpolation would choke on '%' in URLs.
    cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return cfg


def upgrade(script_location: Path | str, url: str, revision: str = "head") -> None:
    """Migrate a database to `revision` (blocking; use upgrade_async from async code)."""
    command.upgrade(alembic_config(script_location, url), revision)


async def upgrade_async(script_location: Path | str, url: str, revision: str = "head") -> None:
    """Migrate from async code: env.py runs its own event loop, so run it in a worker thread."""
    await asyncio.to_thread(upgrade, script_location, url, revision)


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's alembic env.py (online mode, asyncpg)."""
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set for alembic")

    def do_run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool, hide_parameters=True)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    asyncio.run(run_async())
