"""The whole system on one machine: PostgreSQL, the provider sandboxes (Stripe, PayPal, Razorpay,
Fatora), every service and the gateway.

`make run` calls main(); end-to-end tests and benchmarks use Stack on free ports.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from hirepay_dev import pg
from hirepay_dev.procs import (
    READY_TIMEOUT,
    REPO_ROOT,
    Process,
    ensure_service_token_secret,
    free_port,
    http_ready,
    python_module,
)
from hirepay_dev.provider_sandboxes import (
    FATORA_API_KEY,
    PAYPAL_CLIENT_ID,
    PAYPAL_CLIENT_SECRET,
    RAZORPAY_KEY_ID,
    RAZORPAY_KEY_SECRET,
    provider_sandbox_process,
)
from hirepay_dev.services import (
    JOBS,
    PAYMENTS,
    WALLET,
    RunningService,
    ServiceSpec,
    prepare_database,
    start_service,
)
from hirepay_dev.supervisor import Supervisor
from hirepay_platform.identity import SECRET_ENV
from payments.adapters.stripe_provider import WEBHOOK_EVENT_TYPES

# Development-only secrets: the sandbox signs webhooks with this, payments verifies with it.
DEV_WEBHOOK_SECRET = "whsec_hirepaydevonly0000000000000000"
# The Stripe events the stack's webhook endpoint receives: exactly those payments acts on.
STRIPE_WEBHOOK_EVENTS = ",".join(WEBHOOK_EVENT_TYPES)
DEV_STRIPE_KEY = "sk_test_hirepaydevonly"
DEV_PROVIDER_WEBHOOK_SECRET = "hirepay-dev-only-provider-webhook-secret"
DEV_PAYPAL_WEBHOOK_ID = "HIREPAYDEVWEBHOOK01"
# provider -> (sandbox module, the PAYMENTS_* variable whose presence means "the real provider")
PROVIDER_SANDBOXES = {
    "paypal": ("paypal_sandbox", "PAYMENTS_PAYPAL_CLIENT_ID"),
    "razorpay": ("razorpay_sandbox", "PAYMENTS_RAZORPAY_KEY_ID"),
    "fatora": ("fatora_sandbox", "PAYMENTS_FATORA_API_KEY"),
}


def service_exists(spec: ServiceSpec) -> bool:
    """A service is started once its package has an entry point and migrations."""
    package = REPO_ROOT / "services" / spec.name / spec.module
    return (package / "__main__.py").exists() and spec.migrations.exists()


@dataclass
class Ports:
    """Where each process listens."""

    sandbox: int
    gateway: int
    providers: dict[str, int]  # paypal, razorpay, fatora sandboxes
    wallet: tuple[int, int]
    payments: tuple[int, int]
    jobs: tuple[int, int]

    @classmethod
    def defaults(cls) -> Ports:
        env = os.environ.get
        return cls(
            sandbox=int(env("SANDBOX_PORT", "12111")),
            gateway=int(env("GATEWAY_PORT", "8080")),
            providers={
                "paypal": int(env("PAYPAL_SANDBOX_PORT", "12112")),
                "razorpay": int(env("RAZORPAY_SANDBOX_PORT", "12113")),
                "fatora": int(env("FATORA_SANDBOX_PORT", "12114")),
            },
            wallet=(int(env("WALLET_GRPC_PORT", "50051")), int(env("WALLET_METRICS_PORT", "9101"))),
            payments=(
                int(env("PAYMENTS_GRPC_PORT", "50052")),
                int(env("PAYMENTS_METRICS_PORT", "9102")),
            ),
            jobs=(int(env("JOBS_GRPC_PORT", "50053")), int(env("JOBS_METRICS_PORT", "9103"))),
        )

    @classmethod
    def free(cls) -> Ports:
        return cls(
            sandbox=free_port(),
            gateway=free_port(),
            providers={name: free_port() for name in PROVIDER_SANDBOXES},
            wallet=(free_port(), free_port()),
            payments=(free_port(), free_port()),
            jobs=(free_port(), free_port()),
        )


@dataclass
class Stack:
    """Starts and stops every part of the system in dependency order."""

    server_url: str
    ports: Ports
    db_suffix: str = ""
    fresh: bool = False
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Entry modules run instead of a service's own, by service name (tests inject faults so).
    modules: dict[str, str] = field(default_factory=dict)
    # Real Stripe: PAYMENTS_STRIPE_* come from the environment and no sandbox is started.
    real_stripe: bool = False
    # Providers used for real (their PAYMENTS_* credentials come from the environment): no sandbox.
    real_providers: frozenset[str] = frozenset()
    # Where the sandbox keeps its state across restarts; None: in memory only.
    sandbox_state: Path | None = None
    # How long each process may take to report ready (a loaded, shared machine needs longer).
    start_timeout: float = READY_TIMEOUT
    sandbox: Process | None = None
    provider_sandboxes: dict[str, Process] = field(default_factory=dict)
    gateway: Process | None = None
    services: dict[str, RunningService] = field(default_factory=dict)

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sandbox}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    def _env(self, name: str, base: dict[str, str]) -> dict[str, str]:
        return {**base, **self.extra_env.get(name, {})}

    def start(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        gateway_url = self.gateway_url
        if not self.real_stripe:
            self.sandbox = Process(
                name=f"sandbox{self.db_suffix}",
                argv=python_module("stripe_sandbox", "--port", str(self.ports.sandbox)),
                env=self._env(
                    "sandbox",
                    {
                        "SANDBOX_WEBHOOK_URL": f"{gateway_url}/api/payments/webhook/stripe",
                        # Only the events payments acts on (stripe_provider.WEBHOOK_EVENT_TYPES),
                        # as an endpoint's enabled events at Stripe: any other event costs a
                        # delivery, a gateway request and a stored event, for nothing (issue 13).
                        "SANDBOX_WEBHOOK_EVENTS": STRIPE_WEBHOOK_EVENTS,
                        "SANDBOX_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET,
                        **(
                            {"SANDBOX_STATE_FILE": str(self.sandbox_state)}
                            if self.sandbox_state
                            else {}
                        ),
                    },
                ),
                ready=http_ready(f"{self.sandbox_url}/_sandbox/health"),
            ).start(self.start_timeout)
        provider_env = self._start_provider_sandboxes(gateway_url)
        targets: dict[str, str] = {}
        per_service_env = {
            "wallet": {},
            "payments": {
                "PAYMENTS_CHECKOUT_CANCEL_URL": f"{gateway_url}/api/payments/checkout/cancel?ref={{ref}}",
                "PAYMENTS_WALLET_TARGET": f"127.0.0.1:{self.ports.wallet[0]}",
                "PAYMENTS_CHECKOUT_RETURN_URL": (
                    f"{gateway_url}/api/payments/return/{{provider}}?ref={{ref}}"
                ),
                **provider_env,
                **(
                    {}
                    if self.real_stripe
                    else {
                        "PAYMENTS_STRIPE_API_KEY": DEV_STRIPE_KEY,
                        "PAYMENTS_STRIPE_API_BASE": self.sandbox_url,
                        "PAYMENTS_STRIPE_WEBHOOK_SECRETS": DEV_WEBHOOK_SECRET,
                    }
                ),
            },
            "jobs": {
                "JOBS_PAYMENTS_TARGET": f"127.0.0.1:{self.ports.payments[0]}",
                "JOBS_WALLET_TARGET": f"127.0.0.1:{self.ports.wallet[0]}",
            },
        }
        for spec, (grpc_port, metrics_port) in (
            (WALLET, self.ports.wallet),
            (PAYMENTS, self.ports.payments),
            (JOBS, self.ports.jobs),
        ):
            if not service_exists(spec):
                continue
            db_url = prepare_database(
                spec, self.server_url, name=spec.database + self.db_suffix, fresh=self.fresh
            )
            running = start_service(
                spec,
                db_url,
                env=self._env(spec.name, per_service_env[spec.name]),
                grpc_port=grpc_port,
                metrics_port=metrics_port,
                log_name=spec.name + self.db_suffix,
                timeout=self.start_timeout,
                module=self.modules.get(spec.name),
            )
            self.services[spec.name] = running
            targets[spec.name] = running.target
        if (REPO_ROOT / "services" / "gateway" / "gateway" / "__main__.py").exists():
            self.gateway = Process(
                name=f"gateway{self.db_suffix}",
                argv=python_module("gateway"),
                env=self._env(
                    "gateway",
                    {
                        "GATEWAY_PORT": str(self.ports.gateway),
                        "GATEWAY_PUBLIC_URL": gateway_url,
                        "GATEWAY_JOBS_TARGET": targets.get("jobs", ""),
                        "GATEWAY_PAYMENTS_TARGET": targets.get("payments", ""),
                        "GATEWAY_WALLET_TARGET": targets.get("wallet", ""),
                    },
                ),
                ready=http_ready(f"{gateway_url}/healthz"),
            ).start(self.start_timeout)

    def provider_url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.ports.providers[provider]}"

    def _start_provider_sandboxes(self, gateway_url: str) -> dict[str, str]:
        """Start the PayPal, Razorpay and Fatora sandboxes (each delivering its webhooks to the
        gateway); returns the payments service's settings for them."""
        env: dict[str, str] = {}
        for provider, (module, _) in PROVIDER_SANDBOXES.items():
            if provider in self.real_providers:
                continue
            prefix = module.upper()
            process = provider_sandbox_process(
                module,
                self.ports.providers[provider],
                self._env(
                    module,
                    {
                        f"{prefix}_WEBHOOK_URL": f"{gateway_url}/api/payments/webhook/{provider}",
                        f"{prefix}_WEBHOOK_SECRET": DEV_PROVIDER_WEBHOOK_SECRET,
                        **(
                            {f"{prefix}_WEBHOOK_ID": DEV_PAYPAL_WEBHOOK_ID}
                            if provider == "paypal"
                            else {}
                        ),
                    },
                ),
                name=f"{provider}-sandbox{self.db_suffix}",
            )
            self.provider_sandboxes[provider] = process.start(self.start_timeout)
        urls = {p: self.provider_url(p) for p in self.provider_sandboxes}
        if "paypal" in urls:
            env |= {
                "PAYMENTS_PAYPAL_CLIENT_ID": PAYPAL_CLIENT_ID,
                "PAYMENTS_PAYPAL_CLIENT_SECRET": PAYPAL_CLIENT_SECRET,
                "PAYMENTS_PAYPAL_API_BASE": urls["paypal"],
                "PAYMENTS_PAYPAL_WEBHOOK_ID": DEV_PAYPAL_WEBHOOK_ID,
            }
        if "razorpay" in urls:
            env |= {
                "PAYMENTS_RAZORPAY_KEY_ID": RAZORPAY_KEY_ID,
                "PAYMENTS_RAZORPAY_KEY_SECRET": RAZORPAY_KEY_SECRET,
                "PAYMENTS_RAZORPAY_API_BASE": urls["razorpay"],
                "PAYMENTS_RAZORPAY_WEBHOOK_SECRET": DEV_PROVIDER_WEBHOOK_SECRET,
            }
        if "fatora" in urls:
            env |= {
                "PAYMENTS_FATORA_API_KEY": FATORA_API_KEY,
                "PAYMENTS_FATORA_API_BASE": urls["fatora"],
                "PAYMENTS_FATORA_WEBHOOK_SECRET": DEV_PROVIDER_WEBHOOK_SECRET,
            }
        return env

    def stop(self) -> None:
        """Stop in reverse dependency order (graceful SIGTERM, then SIGKILL)."""
        if self.gateway is not None:
            self.gateway.stop()
        for name in ("jobs", "payments", "wallet"):
            if name in self.services:
                self.services[name].stop()
        if self.sandbox is not None:
            self.sandbox.stop()
        for process in self.provider_sandboxes.values():
            process.stop()

    def processes(self) -> dict[str, Process]:
        """Every started process by name, in start order."""
        found: dict[str, Process] = {}
        if self.sandbox is not None:
            found["sandbox"] = self.sandbox
        for provider, process in self.provider_sandboxes.items():
            found[f"{provider}-sandbox"] = process
        for name, svc in self.services.items():
            found[name] = svc.process
        if self.gateway is not None:
            found["gateway"] = self.gateway
        return found

    def describe(self) -> str:
        lines = []
        if self.gateway is not None:
            lines.append(f"  gateway   {self.gateway_url}  (OpenAPI: {self.gateway_url}/docs)")
        for name, svc in self.services.items():
            lines.append(
                f"  {name:<9} grpc {svc.target}  metrics http://127.0.0.1:{svc.metrics_port}/metrics"
            )
        if self.sandbox is not None:
            lines.append(f"  sandbox   {self.sandbox_url}  (Stripe-compatible, offline)")
        for provider in self.provider_sandboxes:
            lines.append(f"  {provider:<9} {self.provider_url(provider)}  (sandbox, offline)")
        return "\n".join(lines)


def main() -> None:
    """`make run`: start everything on the default ports, keep it running until Ctrl-C/SIGTERM.

    A process that dies is restarted with backoff (see supervisor.py); the sandbox keeps its
    state in .data/sandbox-state.json (SANDBOX_STATE_FILE), so a restart forgets no payment.
    """
    server_url = pg.server_url()
    where = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL (.data/pg)"
    print(f"PostgreSQL: {where}", flush=True)
    real_stripe = bool(os.environ.get("PAYMENTS_STRIPE_API_KEY"))
    if real_stripe:
        # An empty base address makes the official SDK talk to api.stripe.com.
        os.environ.setdefault("PAYMENTS_STRIPE_API_BASE", "")
        print("Stripe: real API (PAYMENTS_STRIPE_API_KEY is set); no sandbox", flush=True)
    real_providers = frozenset(
        name for name, (_, variable) in PROVIDER_SANDBOXES.items() if os.environ.get(variable)
    )
    for name in sorted(real_providers):
        print(f"{name}: real API ({PROVIDER_SANDBOXES[name][1]} is set); no sandbox", flush=True)
    # Every process signs its gRPC calls with one secret: the environment's, else a random one for
    # this run (restarted processes inherit it; there is no built-in value).
    if not os.environ.get(SECRET_ENV):
        ensure_service_token_secret()
        print(f"{SECRET_ENV}: generated for this run", flush=True)
    state = Path(os.environ.get("SANDBOX_STATE_FILE") or REPO_ROOT / ".data" / "sandbox-state.json")
    stack = Stack(
        server_url=server_url,
        ports=Ports.defaults(),
        real_stripe=real_stripe,
        real_providers=real_providers,
        sandbox_state=state,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stack.start()
    except Exception as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print("Hirepay is running:\n" + stack.describe(), flush=True)
    print(f"Logs: {REPO_ROOT / '.data' / 'logs'}   Stop with Ctrl-C.", flush=True)
    Supervisor(stack.processes()).run(stop)
    print("stopping...", flush=True)
    stack.stop()
    print("stopped.", flush=True)


if __name__ == "__main__":
    main()
