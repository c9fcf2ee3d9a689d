"""PostgreSQL for development, tests and benchmarks: DATABASE_URL if set, else an embedded server.

The embedded server is the `pgserver` package's real PostgreSQL binaries, started on a Unix socket
under `.data/`, so `make run` and `make test` work on a machine with no PostgreSQL installed.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from hirepay_dev.procs import REPO_ROOT

# Services, tests and the benchmark open many pooled connections at once.
MAX_CONNECTIONS = 400
_EMBEDDED_URL: str | None = None


def _pgdata_dir() -> Path:
    wanted = REPO_ROOT / ".data" / "pg"
    # A Unix socket path is limited to ~107 bytes; fall back to /tmp for deep checkouts.
    if len(str(wanted)) > 60:
        wanted = Path(tempfile.gettempdir()) / f"hirepay-pg-{abs(hash(str(REPO_ROOT))) % 10**8}"
    return wanted


def bin_dir() -> Path:
    """Directory of the PostgreSQL client/server binaries shipped by pgserver (pgbench, psql)."""
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def embedded_server_url() -> str:
    """Start (or reuse) the embedded PostgreSQL and return its superuser URL."""
    global _EMBEDDED_URL
    if _EMBEDDED_URL is not None:
        return _EMBEDDED_URL
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=Warning)
    import pgserver
    from pgserver._commands import pg_ctl

    pgdata = _pgdata_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # Another process (make run, a parallel test run) may own a running server: leave it running.
    started_here = not _running(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    uri = server.get_uri()
    current = int(server.psql("SHOW max_connections;").split("\n")[2].strip())
    if current < MAX_CONNECTIONS:
        server.psql(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS};")
        # restart keeps the original command-line options (the socket directory).
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=server.system_user)

    def stop() -> None:
        subprocess.run(
            [str(bin_dir() / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
            **_as_user(server.system_user),
        )

    if started_here and os.environ.get("HIREPAY_KEEP_PG") != "1":
        atexit.register(stop)
    _EMBEDDED_URL = uri
    return uri


def _running(pgdata: Path) -> bool:
    """True when a postmaster is alive for this data directory."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _as_user(user: str | None) -> dict[str, object]:
    if user is None or os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def server_url() -> str:
    """The PostgreSQL server to use: DATABASE_URL when set, otherwise the embedded one."""
    return os.environ.get("DATABASE_URL") or embedded_server_url()


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def libpq_url(url: str) -> str:
    """libpq-style URL (for psql/pgbench) for any SQLAlchemy URL."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def create_database(server: str, name: str, *, drop_existing: bool = False) -> str:
    """Create database `name` on the server (if missing) and return its URL."""
    psql = str(bin_dir() / "psql")
    admin = libpq_url(with_database(server, "postgres"))
    if drop_existing:
        subprocess.run(
            [psql, admin, "-q", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
            check=True,
            capture_output=True,
        )
    exists = subprocess.run(
        [psql, admin, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run(
            [psql, admin, "-q", "-c", f'CREATE DATABASE "{name}"'], check=True, capture_output=True
        )
    return with_database(server, name)
