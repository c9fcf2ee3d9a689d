"""The plan_cache_mode a unit of work's connection runs with (issue 13, round 14: the request
path's engines plan generically, the default ones keep PostgreSQL's default plans)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text


async def plan_cache_mode(uow: Any) -> str:
    """`SHOW plan_cache_mode` in a transaction of `uow` (entered and left here)."""
    async with uow:
        return str(await uow.session.scalar(text("SHOW plan_cache_mode")))
