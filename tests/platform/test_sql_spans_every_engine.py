"""Every engine of a process gets SQL statement spans when HIREPAY_TRACE_SQL is on, not only the
first: jobs and payments run the posting path on an engine of its own (generic plans), and the
OpenTelemetry SQLAlchemy instrumentor, one per process, ignored a second instrument() call, so the
posting path's statements went untraced (the bench's latency budget showed `sql 0.0`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hirepay_dev.procs import REPO_ROOT

SCRIPT = """
import asyncio, sys
from sqlalchemy import text
from hirepay_platform import db, tracing

tracing.setup_tracing("sql-spans-test", "file:" + sys.argv[2])

async def main() -> None:
    first = db.create_engine(sys.argv[1])
    second = db.create_engine(sys.argv[1], generic_plans=True)
    for engine, tag in ((first, "first_engine"), (second, "second_engine")):
        async with engine.connect() as connection:
            await connection.execute(text(f"SELECT 1 AS {tag}"))
        await engine.dispose()

asyncio.run(main())
"""


def test_both_engines_statements_are_spans(make_database, tmp_path: Path) -> None:
    url = make_database("sql_spans")
    spans = tmp_path / "spans.jsonl"
    env = {**os.environ, "HIREPAY_TRACE_SQL": "true", "HIREPAY_TRACES": f"file:{spans}"}
    subprocess.run(
        [sys.executable, "-c", SCRIPT, url, str(spans)],
        check=True,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    statements = [
        str(attribute)
        for line in spans.read_text().splitlines()
        for attribute in json.loads(line).get("attributes", {}).values()
    ]
    assert any("first_engine" in s for s in statements), statements
    assert any("second_engine" in s for s in statements), statements
