"""Drive the PayPal, Razorpay and Fatora sandboxes from tests and tools: start one, point the
official SDK at it (PayPal, Razorpay), and use the `/_sandbox/` admin API they share."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hirepay_dev.procs import Process, free_port, http_ready, python_module
from hirepay_dev.sandbox_admin import AdminApi

if TYPE_CHECKING:
    import razorpay
    from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

PAYPAL_CLIENT_ID = "hirepay-sandbox-client-id"
PAYPAL_CLIENT_SECRET = "hirepay-sandbox-client-secret"
RAZORPAY_KEY_ID = "rzp_test_hirepaysandbox"
RAZORPAY_KEY_SECRET = "hirepay-sandbox-key-secret"
FATORA_API_KEY = "E4B73FEE-F492-4607-A38D-852B0EBC91C9"  # Fatora's public test key

# module -> (default port, environment prefix)
SANDBOXES = {
    "paypal_sandbox": (12112, "PAYPAL_SANDBOX"),
    "razorpay_sandbox": (12113, "RAZORPAY_SANDBOX"),
    "fatora_sandbox": (12114, "FATORA_SANDBOX"),
}


def provider_sandbox_process(
    module: str,
    port: int,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> Process:
    """`python -m <module> --port <port>` as a not yet started `Process` that is ready when its
    `/_sandbox/health` answers (for `make run`'s stack and for tests).

    `env` takes the `<PREFIX>_*` settings of `SANDBOXES[module]`, e.g.
    PAYPAL_SANDBOX_WEBHOOK_URL and PAYPAL_SANDBOX_WEBHOOK_SECRET.
    """
    return Process(
        name=name or module.replace("_", "-"),
        argv=python_module(module, "--port", str(port)),
        env=dict(env or {}),
        ready=http_ready(f"http://127.0.0.1:{port}/_sandbox/health"),
    )


def start_provider_sandbox(
    module: str,
    name: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Process, str]:
    """Start `python -m <module>` on a free port; returns the process and its base URL.

    Stop it with `process.stop()`.
    """
    port = port or free_port()
    process = provider_sandbox_process(module, port, env, name).start()
    return process, f"http://127.0.0.1:{port}"


def paypal_client(
    base_url: str,
    client_id: str = PAYPAL_CLIENT_ID,
    client_secret: str = PAYPAL_CLIENT_SECRET,
    *,
    timeout: int = 60,
) -> PaypalServersdkClient:
    """The official `paypal-server-sdk` client with its base URL pointed at the sandbox.

    The SDK only knows its two environments; its `Configuration.get_base_uri` is what every
    call asks for the host, so a subclass answering the sandbox URL is all it takes.
    """
    from paypalserversdk.configuration import Configuration, Server
    from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
    from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

    class SandboxConfiguration(Configuration):
        def __init__(self, **kwargs: Any) -> None:
            self.sandbox_base_url = base_url.rstrip("/")
            super().__init__(**kwargs)

        def get_base_uri(self, server: Server = Server.DEFAULT) -> str:
            return self.sandbox_base_url

    config = SandboxConfiguration(
        timeout=timeout,
        max_retries=0,
        client_credentials_auth_credentials=ClientCredentialsAuthCredentials(
            o_auth_client_id=client_id, o_auth_client_secret=client_secret
        ),
    )
    return PaypalServersdkClient(config=config)


def razorpay_client(
    base_url: str,
    key_id: str = RAZORPAY_KEY_ID,
    key_secret: str = RAZORPAY_KEY_SECRET,
) -> razorpay.Client:
    """The official `razorpay` client with `base_url` pointed at the sandbox (no retries)."""
    import razorpay

    return razorpay.Client(auth=(key_id, key_secret), base_url=base_url.rstrip("/"))


class KitAdmin(AdminApi):
    """The kit's admin API (AdminApi), with its webhook endpoints added and its deliveries
    awaited."""

    def wait_for_deliveries(
        self, event_id: str, status: str = "succeeded", timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """The deliveries of an event once all have reached `status` (the sandbox records an
        attempt's answer just after the receiver has seen the request)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.deliveries(event_id=event_id)
            if found and all(d["status"] == status for d in found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"deliveries of {event_id} not all {status}: {found}")
            time.sleep(0.02)

    def add_webhook_endpoint(
        self, url: str, events: list[str] | None = None, secret: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url, "events": events or ["*"]}
        if secret:
            body["secret"] = secret
        endpoint: dict[str, Any] = self.call("POST", "/_sandbox/webhooks/endpoints", body)
        return endpoint
