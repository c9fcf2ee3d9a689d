"""Keep `make run`'s processes up: a process that dies is restarted with backoff, not the whole stack.

Each restart is logged with its cause and delay. The delay doubles after each failed start or
quick crash (1 s, 2 s, 4 s ... up to 30 s) and goes back to the first step once a process has
stayed up for a minute, so a crash loop does not spin and a one-off crash is repaired at once.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hirepay_dev.procs import READY_TIMEOUT, Process


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Supervised:
    """One process under supervision and its restart bookkeeping."""

    name: str
    process: Process
    restarts: int = 0
    failures_in_a_row: int = 0
    up_since: float = field(default_factory=time.monotonic)
    restart_at: float | None = None


class Supervisor:
    """Watches processes (in start order) and restarts the ones that exit."""

    def __init__(
        self,
        processes: dict[str, Process],
        *,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        stable_after: float = 60.0,
        start_timeout: float = READY_TIMEOUT,
        log: Callable[[str], None] = _stderr,
    ) -> None:
        self.watched = {name: Supervised(name, process) for name, process in processes.items()}
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.stable_after = stable_after
        self.start_timeout = start_timeout
        self.log = log

    def _delay(self, entry: Supervised) -> float:
        return min(self.base_delay * 2 ** max(entry.failures_in_a_row - 1, 0), self.max_delay)

    def check(self, now: float | None = None) -> None:
        """One pass: notice exits, and restart whatever is due."""
        now = time.monotonic() if now is None else now
        for entry in self.watched.values():
            process = entry.process
            if entry.restart_at is None:
                if process.running:
                    if now - entry.up_since >= self.stable_after:
                        entry.failures_in_a_row = 0
                    continue
                code = process.popen.returncode if process.popen is not None else None
                entry.failures_in_a_row += 1
                delay = self._delay(entry)
                entry.restart_at = now + delay
                self.log(
                    f"supervisor: {entry.name} exited (code {code}); restarting in {delay:g}s"
                    f" (see {process.log_path})"
                )
            elif now >= entry.restart_at:
                self._restart(entry)

    def _restart(self, entry: Supervised) -> None:
        entry.restarts += 1
        process = entry.process
        process.popen = None
        try:
            process.start(self.start_timeout)
        except (RuntimeError, TimeoutError, OSError) as exc:
            process.kill()
            entry.failures_in_a_row += 1
            delay = self._delay(entry)
            entry.restart_at = time.monotonic() + delay
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.log(
                f"supervisor: {entry.name} did not come back ({first_line}); retrying in {delay:g}s"
            )
            return
        entry.restart_at = None
        entry.up_since = time.monotonic()
        self.log(f"supervisor: {entry.name} restarted (restart #{entry.restarts})")

    def run(self, stop: threading.Event, poll: float = 0.5) -> None:
        """Supervise until `stop` is set (Ctrl-C / SIGTERM); the caller then stops everything."""
        while not stop.is_set():
            self.check()
            stop.wait(poll)
