"""`python -m stripe_sandbox --host 127.0.0.1 --port 12111`: serve the sandbox with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from stripe_sandbox.app import create_app
from stripe_sandbox.config import SandboxConfig, load_config


def server_config(config: SandboxConfig) -> uvicorn.Config:
    """How uvicorn serves the sandbox (also what the sandbox's per-posting count is taken on)."""
    return uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
        # The C parser (h11 is pure Python: CPU per call counts, issue 13); its request cycle
        # holds the transport the fault middleware aborts, as h11's does.
        http="httptools",
        log_level=config.log_level,
        timeout_graceful_shutdown=1,
    )


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def gather_only_printed_log_facts() -> None:
    """Log records without the facts LOG_FORMAT (and uvicorn's) never print: the caller's file
    and line (a walk up the stack), the thread, the process (the logging documentation's
    "Optimization" switches). Every line is still written, the same; gathering those cost a
    fifth of each line's Python calls, and a posting writes four (issue 13)."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def main() -> None:
    config = load_config()
    logging.basicConfig(level=config.log_level.upper(), format=LOG_FORMAT)
    gather_only_printed_log_facts()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # deliveries are logged by webhooks.py
    server = uvicorn.Server(server_config(config))
    server.run()
    if not server.started:  # as uvicorn.run: the port taken, say
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
