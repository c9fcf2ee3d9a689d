"""A test session drops the databases it created on the server when it ends (tests.conftest)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

from hirepay_dev import pg
from tests.support.databases import ServiceDatabases, SessionDatabases


def _databases(server_url: str) -> set[str]:
    admin = pg.libpq_url(pg.with_database(server_url, "postgres"))
    out = subprocess.run(
        [str(pg.bin_dir() / "psql"), admin, "-tAc", "SELECT datname FROM pg_database"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def _checkpoints_requested(server_url: str) -> int:
    """Checkpoints the server ran on request since its statistics were reset (DROP DATABASE
    requests one); PostgreSQL 17 moved the counter to pg_stat_checkpointer."""
    admin = pg.libpq_url(pg.with_database(server_url, "postgres"))

    def value(query: str) -> int:
        psql = [str(pg.bin_dir() / "psql"), admin, "-tAc", query]
        return int(subprocess.run(psql, check=True, capture_output=True, text=True).stdout)

    if value("SHOW server_version_num") >= 170000:
        return value("SELECT num_requested FROM pg_stat_checkpointer")
    return value("SELECT checkpoints_req FROM pg_stat_bgwriter")


def test_drop_databases_drops_the_named_ones_and_only_them(pg_server_url: str) -> None:
    token = uuid.uuid4().hex[:8]
    names = [f"dropme_{token}_{i}" for i in range(3)]
    for name in names:
        pg.create_database(pg_server_url, name)
    try:
        # One of them in use: WITH (FORCE) ends the session holding it.
        held = subprocess.Popen(
            [
                str(pg.bin_dir() / "psql"),
                pg.libpq_url(pg.with_database(pg_server_url, names[0])),
                "-c",
                "SELECT pg_sleep(60)",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            pg.drop_databases(pg_server_url, [names[0], names[1], f"never_made_{token}"])
        finally:
            held.kill()
            held.wait()
        left = _databases(pg_server_url)
        assert names[0] not in left and names[1] not in left
        assert names[2] in left
    finally:
        pg.drop_databases(pg_server_url, names)
    assert not set(names) & _databases(pg_server_url)


def test_the_session_factories_register_every_database_they_make(
    make_database: Callable[[str], str],
    make_service_database: Callable[[str], str],
    test_databases: SessionDatabases,
    pg_server_url: str,
) -> None:
    plain = urlsplit(make_database("registered")).path.lstrip("/")
    service = urlsplit(make_service_database("wallet")).path.lstrip("/")
    made = set(test_databases.names())
    assert {plain, service} <= made
    # The service database's template is registered too (it is dropped with the rest).
    assert any(name.startswith("t_tpl_wallet_") for name in made)
    assert {plain, service} <= _databases(pg_server_url)


def test_databases_dropped_together_share_checkpoints(pg_server_url: str) -> None:
    """Every DROP DATABASE waits for a checkpoint: dropped one after another, eight databases cost
    eight checkpoints (a session's hundred-odd, 20-30 s at its end); dropped side by side, their
    waits share checkpoints."""
    token = uuid.uuid4().hex[:8]
    names = [f"dropsome_{token}_{i}" for i in range(8)]
    try:
        for name in names:
            pg.create_database(pg_server_url, name)
        before = _checkpoints_requested(pg_server_url)
        pg.drop_databases(pg_server_url, names)
        checkpoints = _checkpoints_requested(pg_server_url) - before
    finally:
        pg.drop_databases(pg_server_url, names)
    assert not set(names) & _databases(pg_server_url)
    assert 1 <= checkpoints <= len(names) // 2


def test_a_service_database_is_made_ahead_of_the_next_request(
    make_service_database: ServiceDatabases, pg_server_url: str
) -> None:
    """Once a service's database is handed out, its next is copied from the template in a thread:
    the test that asks for it finds it made (a third to half a second of the server's each)."""
    first = make_service_database("jobs")
    ahead = make_service_database.made_ahead("jobs")
    assert ahead is not None and ahead != first
    existing = _databases(pg_server_url)
    second = make_service_database("jobs")
    assert second == ahead
    assert urlsplit(second).path.lstrip("/") in existing  # made before it was asked for
    assert make_service_database.made_ahead("jobs") not in (None, first, second)
