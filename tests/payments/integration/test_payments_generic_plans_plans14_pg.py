"""Payments' pay-to-post calls (Authorize, Capture, Void, webhooks) plan their statements
generically, its other RPCs (listings, the auditor's reads) and its workers keep PostgreSQL's
default plans (issue 13, round 14; db.Database's `generic_plan_requests`), on
real PostgreSQL: the unit of work behind each is asked for its connection's plan_cache_mode."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from payments.entrypoints.main import build_app
from payments.entrypoints.settings import PaymentsSettings
from tests.support.plan_cache import plan_cache_mode


async def test_posting_calls_plan_generically_the_rest_does_not(
    make_service_database: Callable[[str], str],
) -> None:
    url = await asyncio.to_thread(make_service_database, "payments")
    # The wallet's ledger wired, so the booking and withdrawal workers are there to ask.
    app = build_app(PaymentsSettings(database_url=url, wallet_target="127.0.0.1:1"))
    for hook in app._startup:
        await hook()
    try:
        [(_, servicer, _)] = app._services
        # Authorize, Capture, Void, the providers' webhooks: the pay-to-post path.
        assert await plan_cache_mode(servicer._posting_deps().uow) == "force_generic_plan"
        # The other RPCs: listings, the auditor's reads (ListPayments, ReconcileProvider, ...).
        assert await plan_cache_mode(servicer._deps().uow) == "auto"
        # The workers' rounds (credit grants and withdrawals take the factory as first argument).
        worker_deps = [w.args[0] for w in app._workers if hasattr(w, "args")]
        assert len(worker_deps) == 2
        for deps in worker_deps:
            assert await plan_cache_mode(deps().uow) == "auto"
    finally:
        for hook in app._shutdown:
            await hook()
