"""PostgreSQL for development, tests and benchmarks: DATABASE_URL if set, else an embedded server.

The embedded server is the `pgserver` package's real PostgreSQL binaries, started on a Unix socket
under `.data/`, so `make run` and `make test` work on a machine with no PostgreSQL installed.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from hirepay_dev.procs import REPO_ROOT

# Services, tests and the benchmark open many pooled connections at once.
MAX_CONNECTIONS = 400
# The embedded server's URL by data directory, once this process has joined its users.
_EMBEDDED_URLS: dict[Path, str] = {}


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


def embedded_server_url(pgdata: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL and return its superuser URL.

    `pgdata`: its data directory (default: the checkout's `.data/pg`). Every process that uses
    the server (a test run, `make run`, a benchmark) counts itself among its users until it exits
    (`_Users`); the last one out stops the server if one of them started it, unless
    HIREPAY_KEEP_PG=1: two test runs in one checkout share it, and neither stops it under the
    other. A server found running with no user (kept, or started by hand) is left running."""
    pgdata = pgdata or _pgdata_dir()
    known = _EMBEDDED_URLS.get(pgdata)
    if known is not None:
        return known
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=Warning)
    import pgserver
    from pgserver._commands import pg_ctl

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    users = _Users(pgdata)
    with users.locked():
        # Under the users' lock: no other process decides to stop the server meanwhile.
        started_here = not _running(pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        uri = server.get_uri()
        current = int(server.psql("SHOW max_connections;").split("\n")[2].strip())
        if current < MAX_CONNECTIONS:
            server.psql(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS};")
            # restart keeps the original command-line options (the socket directory).
            pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=server.system_user)
        users.join(started_here=started_here, keep=os.environ.get("HIREPAY_KEEP_PG") == "1")

    def stop() -> None:
        subprocess.run(
            [str(bin_dir() / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
            **_as_user(server.system_user),
        )

    atexit.register(users.leave, stop)
    _EMBEDDED_URLS[pgdata] = uri
    return uri


class _Users:
    """The processes using one embedded server, in `<pgdata>.users.json` beside its data
    directory, changed only under an exclusive lock of `<pgdata>.users.lock` (flock: released by
    the kernel when its holder dies): {"pids": [...], "stop": bool}. A process that died without
    leaving (kill -9) is dropped when next read (its pid no longer runs). `stop`: the server was
    started by a user without HIREPAY_KEEP_PG=1 while none ran, so the last user out stops it."""

    def __init__(self, pgdata: Path) -> None:
        self.path = pgdata.with_name(pgdata.name + ".users.json")
        self.lock_path = pgdata.with_name(pgdata.name + ".users.lock")

    @contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> tuple[list[int], bool]:
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return [], False
        return [pid for pid in state.get("pids", []) if _alive(pid)], bool(state.get("stop"))

    def _write(self, pids: list[int], stop: bool) -> None:
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps({"pids": pids, "stop": stop}))
        partial.replace(self.path)  # whole or not at all, should this process die midway

    def join(self, *, started_here: bool, keep: bool) -> None:
        """Count this process in (under `locked`)."""
        pids, stop = self._read()
        if not pids:
            # The first user decides: a server it started stops with the last user; one found
            # running (kept, started by hand) stays.
            stop = started_here
        self._write([*pids, os.getpid()], stop and not keep)

    def leave(self, stop_server: Callable[[], None]) -> None:
        """Count this process out; stop the server if it was the last user and `stop` holds."""
        with self.locked():
            pids, stop = self._read()
            rest = [pid for pid in pids if pid != os.getpid()]
            self._write(rest, stop)
            if not rest and stop:
                stop_server()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


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


# PostgreSQL forces a checkpoint for every DROP DATABASE and waits for it (so that the checkpointer
# forgets the dropped files): dropped one after another, a session's hundred-odd databases took
# 20-30 s of checkpoints. Drops waiting side by side share one checkpoint, so they are spread over
# up to this many psql sessions at once.
DROP_SESSIONS = 32


def drop_databases(server: str, names: Iterable[str]) -> None:
    """Drop the named databases from the server, connections and all, in psql sessions side by
    side (DROP_SESSIONS: their drops share checkpoints).

    Tests drop what they created when their session ends: databases left on a checkout's embedded
    server cost autovacuum work on every later run (its launcher visits each database in turn),
    which the benchmark measures as PostgreSQL's CPU outside the services' backends."""
    wanted = sorted(set(names))
    if not wanted:
        return
    admin = libpq_url(with_database(server, "postgres"))
    sessions = min(DROP_SESSIONS, len(wanted))
    running: list[tuple[list[str], subprocess.Popen[bytes]]] = []
    for first in range(sessions):
        argv = [str(bin_dir() / "psql"), admin, "-q", "-v", "ON_ERROR_STOP=1"]
        for name in wanted[first::sessions]:
            argv += ["-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        running.append((argv, popen))
    failed: subprocess.CalledProcessError | None = None
    for argv, popen in running:  # every session runs to its end before a failure is raised
        out, err = popen.communicate()
        if popen.returncode and failed is None:
            failed = subprocess.CalledProcessError(popen.returncode, argv, out, err)
    if failed is not None:
        raise failed


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
