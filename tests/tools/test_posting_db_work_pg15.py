"""The database work of one pay-to-post, counted (issue 13): a count, not a time.

On a stack of its own (nothing else posts), serial postings by card through the gateway, each
counted in jobs' and payments' databases:
- the SQL statements and COMMITs of the posting's request and of its Stripe webhooks, from the
  traces (HIREPAY_TRACE_SQL: every statement and every COMMIT of a unit of work is a span; a
  statement run alone, in autocommit, is its own transaction and has no COMMIT span);
- the rows each table gains, updates (and of those, how many not HOT: a new entry in every index
  of the table) and deletes, from pg_stat_user_tables: the booking worker's rows included.

A change that adds a statement, a commit, a row written or an index entry to a posting fails here
and must say so by changing these numbers (README, "PostgreSQL per posting"). The periodic
workers' idle rounds write no rows and run outside the posting's traces."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from gateway.service_layer.auth import issue_token
from hirepay_dev import pg
from hirepay_dev.benchtrace import read_spans
from hirepay_dev.stack import Ports, Stack
from tests.support.databases import SessionDatabases

POSTINGS = 6
# PostgreSQL reports a backend's table counts at most once a second, and an idle backend's
# within 10 s (PGSTAT_IDLE_INTERVAL): read them once every backend has.
STATS_REPORTED_SECONDS = 11.0

# Per posting, by database: (statements, commits) of the posting's request and its webhooks.
# jobs: the posting's three steps, each one statement alone (its own transaction). payments:
# Authorize (the barrier, the payment and its audit) and its outcome, Confirm's barrier and the
# capture's outcome (with the booking it owes), then two webhooks, each stored by one statement.
EXPECTED_REQUEST = {"jobs": (3, 0), "payments": (4, 4)}
EXPECTED_WEBHOOKS = {"jobs": (0, 0), "payments": (2, 2)}

# Per posting: table -> (inserted, updated, updated not HOT, deleted).
EXPECTED_ROWS = {
    "jobs": {
        "jobs": (1, 2, 1, 0),  # activated: status is in the listing's partial indexes
        "job_transitions": (3, 0, 0, 0),
        "posting_rate_attempts": (1, 0, 0, 0),
        "posting_rate_buckets": (0, 1, 0, 0),
        "sagas": (1, 2, 2, 0),  # state moves out of (then within) ix_sagas_unfinished
        "saga_log": (3, 0, 0, 0),
    },
    "payments": {
        "audit_log": (7, 0, 0, 0),
        # The booking: leased (HOT since 0023: lease_until is in no index), then marked done.
        "credit_grants": (1, 2, 1, 0),
        "outbox": (2, 0, 0, 0),
        "payments": (1, 3, 3, 0),  # updated_at, next_poll_at and state are indexed
        "provider_events": (2, 0, 0, 0),
        "tcc_barriers": (2, 0, 0, 0),
    },
}

_BODY = {
    "job": {
        "title": "Counted engineer",
        "description": "Counts what a posting costs the database.",
        "location": "Remote",
        "employment_type": "full_time",
        "category": "engineering",
    },
    "payment": {"method": "card", "payment_method": "pm_card_visa"},
    "accept_terms": True,
}
_ROOTS = {
    "request": "POST /api/jobs/create-with-payment",
    "webhooks": "POST /api/payments/webhook/stripe",
}
_TABLES = "SELECT relname, n_tup_ins, n_tup_upd, n_tup_upd - n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables"


@pytest.fixture(scope="module")
def counted(
    pg_server_url: str, tmp_path_factory: pytest.TempPathFactory, test_databases: SessionDatabases
) -> Iterator[tuple[Stack, Path]]:
    traces = tmp_path_factory.mktemp("db-work") / "spans.jsonl"
    traced = {"HIREPAY_TRACES": f"file:{traces}", "HIREPAY_TRACE_SQL": "true"}
    env = {name: dict(traced) for name in ("wallet", "payments", "jobs", "gateway", "sandbox")}
    env["gateway"]["GATEWAY_RATE_LIMIT_PER_MINUTE"] = "100000"
    stack = Stack(
        server_url=pg_server_url,
        ports=Ports.free(),
        db_suffix=f"_dbwork_{uuid.uuid4().hex[:6]}",
        fresh=True,
        extra_env=env,
        start_timeout=120.0,
    )
    test_databases.add(*stack.database_names())
    stack.start()
    try:
        yield stack, traces
    finally:
        stack.stop()


async def _rows(url: str) -> dict[str, tuple[int, ...]]:
    connection = await asyncpg.connect(pg.libpq_url(url))
    try:
        return {r[0]: tuple(r[1:]) for r in await connection.fetch(_TABLES)}
    finally:
        await connection.close()


async def _all_rows(stack: Stack) -> dict[str, dict[str, tuple[int, ...]]]:
    await asyncio.sleep(STATS_REPORTED_SECONDS)
    return {name: await _rows(stack.services[name].database_url) for name in ("jobs", "payments")}


def _post(client: httpx.Client, token: str, key: str) -> None:
    response = client.post(
        "/api/jobs/create-with-payment",
        json=_BODY,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    assert response.json()["job"]["status"] == "active"


def _spans_by_root(traces: Path, since_ns: int) -> dict[str, Counter[tuple[str, str]]]:
    """(service, "sql" | "commit") -> count, in the traces of each kind of root begun since."""
    spans = read_spans(traces)
    by_trace: dict[str, list[dict]] = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
    counts: dict[str, Counter[tuple[str, str]]] = {kind: Counter() for kind in _ROOTS}
    for trace in by_trace.values():
        ids = {s["span_id"] for s in trace}
        roots = [s for s in trace if not s["parent_span_id"] or s["parent_span_id"] not in ids]
        kind = next((k for k, name in _ROOTS.items() if roots[0]["name"] == name), None)
        if kind is None or roots[0]["start_ns"] < since_ns:
            continue
        for span in trace:
            attributes = span.get("attributes", {})
            if attributes.get("db.system") or attributes.get("db.system.name"):
                counts[kind][(span["service"], "sql")] += 1
            elif span["name"] == "db.commit":
                counts[kind][(span["service"], "commit")] += 1
    return counts


async def test_a_posting_costs_the_databases_these_statements_commits_and_rows(counted) -> None:
    stack, traces = counted
    company = f"dbwork-{uuid.uuid4().hex[:6]}"
    token = issue_token(user_id=company, role="company")
    with httpx.Client(base_url=stack.gateway_url, timeout=60.0) as client:
        for i in range(2):  # warm: every pool, plan and worker has run once
            await asyncio.to_thread(_post, client, token, f"{company}-warm-{i}")
        before = await _all_rows(stack)
        since = time.time_ns()
        for i in range(POSTINGS):
            await asyncio.to_thread(_post, client, token, f"{company}-{i}")
        after = await _all_rows(stack)  # the webhooks and the bookings are done by then too

    per_posting = {
        db: {
            table: tuple(
                (now - was) / POSTINGS
                for now, was in zip(
                    after[db][table], before[db].get(table, (0, 0, 0, 0)), strict=True
                )
            )
            for table in after[db]
            if after[db][table] != before[db].get(table)
        }
        for db in after
    }
    spans = _spans_by_root(traces, since)
    measured = {
        kind: {
            db: (spans[kind][(db, "sql")] / POSTINGS, spans[kind][(db, "commit")] / POSTINGS)
            for db in ("jobs", "payments")
        }
        for kind in _ROOTS
    }
    assert measured == {"request": EXPECTED_REQUEST, "webhooks": EXPECTED_WEBHOOKS}
    for db, tables in EXPECTED_ROWS.items():
        assert {t: per_posting[db].get(t) for t in tables} == tables, per_posting[db]
