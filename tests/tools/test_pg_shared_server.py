"""The embedded PostgreSQL shared by several processes of one checkout (tools/hirepay_dev/pg.py):
two test runs at once each count themselves among its users, and the first to finish no longer
stops it under the other; the last one out stops it. A user killed with SIGKILL does not keep it
running forever, and a server kept with HIREPAY_KEEP_PG=1 stays up for the next run.

Each process here is a real one (`python -c`), on a data directory of the test's own (its own
server, never the suite's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hirepay_dev import pg
from hirepay_dev.procs import REPO_ROOT

# A user of the server: joins, says its URL, keeps using it until its stdin closes, then exits
# (normally, its exit hooks run), after one more query.
USER = """
import sys
from pathlib import Path
from hirepay_dev import pg
url = pg.embedded_server_url(Path(sys.argv[1]))
print(url, flush=True)
sys.stdin.readline()
"""


class User:
    """A process using the embedded server of `pgdata`."""

    def __init__(self, pgdata: Path, *, keep: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("HIREPAY_KEEP_PG", "DATABASE_URL")}
        if keep:
            env["HIREPAY_KEEP_PG"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-c", USER, str(pgdata)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
            env=env,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith("postgresql://"), self.url

    def exit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)


def answers(url: str) -> bool:
    """The server at `url` runs a query."""
    done = subprocess.run(
        [str(pg.bin_dir() / "psql"), pg.libpq_url(url), "-tAc", "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode == 0 and done.stdout.strip() == "1"


@pytest.fixture(scope="module")
def pgdata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory of this module's own (initialised by its first user), its server stopped
    at the end whatever a test left."""
    path = tmp_path_factory.mktemp("shared") / "pg"
    yield path
    if pg._running(path):
        subprocess.run(
            [str(pg.bin_dir() / "pg_ctl"), "-D", str(path), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
            **pg._as_user("pgserver"),
        )


def test_two_runs_at_once_the_first_to_finish_leaves_the_server_to_the_other(pgdata) -> None:
    first = User(pgdata)
    second = User(pgdata)
    assert second.url == first.url
    first.exit()
    assert pg._running(pgdata) and answers(second.url)
    second.exit()
    assert not pg._running(pgdata)  # the last one out stopped it


def test_a_killed_user_does_not_keep_the_server_running(pgdata) -> None:
    killed = User(pgdata)
    other = User(pgdata)
    killed.kill()  # no exit hooks: it never leaves
    assert answers(other.url)
    other.exit()
    assert not pg._running(pgdata)


def test_a_kept_server_stays_up_for_the_next_run(pgdata) -> None:
    kept = User(pgdata, keep=True)
    kept.exit()
    assert pg._running(pgdata)
    # A later run finds it running with no user: it leaves it running too.
    later = User(pgdata)
    later.exit()
    assert pg._running(pgdata) and answers(later.url)
