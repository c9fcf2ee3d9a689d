"""Jobs' pay-to-post RPC plans its statements generically, the other RPCs (listings) and the
workers keep PostgreSQL's default plans (issue 13, round 14; db.create_engine's generic_plans),
on real PostgreSQL: the unit of work behind each is asked for its connection's plan_cache_mode."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from jobs.entrypoints.main import build_adapters, build_app
from jobs.entrypoints.settings import JobsSettings
from tests.support.plan_cache import plan_cache_mode


async def test_posting_plans_generically_the_rest_does_not(
    make_service_database: Callable[[str], str],
) -> None:
    url = await asyncio.to_thread(make_service_database, "jobs")
    settings = JobsSettings(database_url=url)
    adapters = build_adapters(settings)
    app = build_app(settings, adapters)
    try:
        [(_, servicer, _)] = app._services
        # CreateJobWithPayment's units of work, those it takes for concurrent work too.
        posting = servicer._posting_deps()
        assert await plan_cache_mode(posting.uow) == "force_generic_plan"
        assert await plan_cache_mode(posting.fresh().uow) == "force_generic_plan"
        # Every other RPC (listings over ranges among them) and the workers' rounds.
        assert await plan_cache_mode(servicer._deps().uow) == "auto"
        assert await plan_cache_mode(adapters.uow_factory()) == "auto"
    finally:
        for hook in app._shutdown:
            await hook()
