"""Process entry point: settings, logs, tracing, then uvicorn on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import logging

import uvicorn

from gateway.entrypoints.app import create_app
from gateway.entrypoints.http_protocol import GatewayHttpProtocol
from gateway.entrypoints.settings import GatewaySettings
from gateway.service_layer.auth import DEV_JWT_KID
from hirepay_platform import eventloop, tracing
from hirepay_platform.logs import configure_logging
from hirepay_platform.settings import load_settings

log = logging.getLogger("gateway")


def main() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging("gateway", settings.log_level)
    tracing.setup_tracing("gateway", settings.traces)
    if DEV_JWT_KID in settings.signing_keys():
        log.warning("GATEWAY_ENV=development: accepting tokens signed with the development key")
    app = create_app(settings)
    log.info(
        "gateway listening on http://%s:%s (jobs %s, payments %s, wallet %s)",
        settings.host,
        settings.port,
        settings.jobs_target,
        settings.payments_target,
        settings.wallet_target,
    )
    eventloop.settle_gc()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # our JSON logging, already configured
        access_log=False,  # the edge middleware logs route templates, never raw URLs
        server_header=False,
        # httptools, with h11 judging whatever httptools refuses while reading a request's head
        # (e.g. an unknown method, which h11 passes on to the edge middleware for a PAY-11
        # answer): see http_protocol.py (issue 13).
        http=GatewayHttpProtocol,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
