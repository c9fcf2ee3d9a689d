"""The whole system on one machine: PostgreSQL, the provider sandboxes (Stripe, PayPal, Razorpay,
Fatora), every service and the gateway.

`make run` calls main(); end-to-end tests and benchmarks use Stack on free ports.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from hirepay_dev import pg
from hirepay_dev.procs import (
    READY_TIMEOUT,
    REPO_ROOT,
    Process,
    StartCancelled,
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
    SPECS,
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

# The services each service calls as soon as it starts (and so must be ready first). Payments
# calls the wallet and the providers only when it has work for them: its channels and HTTP pools
# open on first use and its workers retry a failed round, so it starts beside them (a booking owed
# while the wallet is still starting is booked once it is up: tests/tools/test_stack_startup.py).
# Jobs opens payments' settlement stream at once and its recovery calls both, so it waits.
STARTUP_NEEDS: dict[str, tuple[str, ...]] = {
    "wallet": (),
    "payments": (),
    "jobs": ("wallet", "payments"),
}


def start_in_order(
    tasks: Mapping[str, tuple[Callable[[threading.Event], None], Sequence[str]]],
) -> None:
    """Run every task (name -> (start, the names it needs first)) in its own thread, each as soon
    as the tasks it needs have succeeded; return once all are done.

    The first failure sets the event every start is given (Process.start then abandons its
    readiness wait and kills its process) and the tasks not yet begun are skipped; that first
    failure is raised once every thread has finished, so nothing is still starting then."""
    cancel = threading.Event()
    done = {name: threading.Event() for name in tasks}
    succeeded: set[str] = set()
    failures: list[BaseException] = []

    def run(name: str) -> None:
        start, needs = tasks[name]
        # A start that fails kills its own process (Process.start); one that succeeds after
        # another failed is on the Stack already, for the caller's stop().
        try:
            for need in needs:
                done[need].wait()
            if cancel.is_set() or any(need not in succeeded for need in needs):
                return  # skipped: a failure is already recorded
            start(cancel)
            succeeded.add(name)
        except BaseException as exc:
            if not isinstance(exc, StartCancelled):
                failures.append(exc)
            cancel.set()
        finally:
            done[name].set()

    threads = [threading.Thread(target=run, args=(name,), name=f"start-{name}") for name in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


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
        """Start every part as soon as what it needs is up, side by side (start_in_order).

        Every port is chosen up front, so nothing waits for another's address: the sandboxes
        start at once, the migrations run meanwhile (one after another: Alembic's `context`/`op`
        are module globals, so two upgrades in one process must not overlap), a service starts
        once its database is migrated and the services it calls at start-up are ready
        (STARTUP_NEEDS), and the gateway once every service is. Whatever did start is on self as soon as it is spawned, so start()'s
        stop() stops it after a failure."""
        specs = [spec for spec in (WALLET, PAYMENTS, JOBS) if service_exists(spec)]
        migrated: dict[str, str] = {}
        tasks: dict[str, tuple[Callable[[threading.Event], None], tuple[str, ...]]] = {}
        if not self.real_stripe:
            tasks["sandbox"] = (self._start_stripe_sandbox, ())
        for provider in PROVIDER_SANDBOXES:
            if provider not in self.real_providers:
                tasks[f"{provider}-sandbox"] = (partial(self._start_provider, provider), ())
        previous: tuple[str, ...] = ()
        for spec in specs:
            # The migrations form one chain (see above); each service waits for its own.
            tasks[f"migrate-{spec.name}"] = (partial(self._migrate, spec, migrated), previous)
            previous = (f"migrate-{spec.name}",)
            needs = tuple(n for n in STARTUP_NEEDS[spec.name] if service_exists(SPECS[n]))
            tasks[spec.name] = (partial(self._start_service, spec, migrated), (*previous, *needs))
        if (REPO_ROOT / "services" / "gateway" / "gateway" / "__main__.py").exists():
            tasks["gateway"] = (self._start_gateway, tuple(spec.name for spec in specs))
        start_in_order(tasks)

    def _migrate(self, spec: ServiceSpec, migrated: dict[str, str], _: threading.Event) -> None:
        migrated[spec.name] = prepare_database(
            spec, self.server_url, name=spec.database + self.db_suffix, fresh=self.fresh
        )

    def _start_stripe_sandbox(self, cancel: threading.Event) -> None:
        self.sandbox = self._stripe_sandbox(self.gateway_url)
        self.sandbox.start(self.start_timeout, cancel)

    def _start_provider(self, provider: str, cancel: threading.Event) -> None:
        process = self._provider_sandbox(provider, self.gateway_url)
        self.provider_sandboxes[provider] = process
        process.start(self.start_timeout, cancel)

    def _start_service(
        self, spec: ServiceSpec, migrated: dict[str, str], cancel: threading.Event
    ) -> None:
        grpc_port, metrics_port = getattr(self.ports, spec.name)
        env = self._env(spec.name, self._service_env(spec.name, self.gateway_url))
        log_name = spec.name + self.db_suffix
        self.services[spec.name] = start_service(
            spec,
            migrated[spec.name],
            env=env,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            log_name=log_name,
            timeout=self.start_timeout,
            module=self.modules.get(spec.name),
            cancel=cancel,
        )

    def _start_gateway(self, cancel: threading.Event) -> None:
        self.gateway = self._gateway_process(self.gateway_url)
        self.gateway.start(self.start_timeout, cancel)

    def _service_env(self, name: str, gateway_url: str) -> dict[str, str]:
        """A service's settings pointing at the others (all on ports chosen up front)."""
        if name == "payments":
            # The pages of real providers send the customer back to the public gateway, so a
            # value the environment gives (README: PAYMENTS_CHECKOUT_RETURN_URL) wins; the
            # service addresses below are the stack's own.
            public = {
                "PAYMENTS_CHECKOUT_CANCEL_URL": f"{gateway_url}/api/payments/checkout/cancel?ref={{ref}}",
                "PAYMENTS_CHECKOUT_RETURN_URL": (
                    f"{gateway_url}/api/payments/return/{{provider}}?ref={{ref}}"
                ),
            }
            return {
                **{key: os.environ.get(key) or value for key, value in public.items()},
                "PAYMENTS_WALLET_TARGET": f"127.0.0.1:{self.ports.wallet[0]}",
                **self._provider_env(),
                **(
                    {}
                    if self.real_stripe
                    else {
                        "PAYMENTS_STRIPE_API_KEY": DEV_STRIPE_KEY,
                        "PAYMENTS_STRIPE_API_BASE": self.sandbox_url,
                        "PAYMENTS_STRIPE_WEBHOOK_SECRETS": DEV_WEBHOOK_SECRET,
                    }
                ),
            }
        if name == "jobs":
            return {
                "JOBS_PAYMENTS_TARGET": f"127.0.0.1:{self.ports.payments[0]}",
                "JOBS_WALLET_TARGET": f"127.0.0.1:{self.ports.wallet[0]}",
            }
        return {}

    def _stripe_sandbox(self, gateway_url: str) -> Process:
        return Process(
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
        )

    def _gateway_process(self, gateway_url: str) -> Process:
        services = {spec.name for spec in (WALLET, PAYMENTS, JOBS) if service_exists(spec)}

        def target(name: str) -> str:
            return f"127.0.0.1:{getattr(self.ports, name)[0]}" if name in services else ""

        return Process(
            name=f"gateway{self.db_suffix}",
            argv=python_module("gateway"),
            env=self._env(
                "gateway",
                {
                    "GATEWAY_PORT": str(self.ports.gateway),
                    "GATEWAY_PUBLIC_URL": gateway_url,
                    "GATEWAY_JOBS_TARGET": target("jobs"),
                    "GATEWAY_PAYMENTS_TARGET": target("payments"),
                    "GATEWAY_WALLET_TARGET": target("wallet"),
                },
            ),
            ready=http_ready(f"{gateway_url}/healthz"),
        )

    def provider_url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.ports.providers[provider]}"

    def _provider_sandbox(self, provider: str, gateway_url: str) -> Process:
        """The PayPal, Razorpay or Fatora sandbox, delivering its webhooks to the gateway."""
        module, _ = PROVIDER_SANDBOXES[provider]
        prefix = module.upper()
        return provider_sandbox_process(
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

    def _provider_env(self) -> dict[str, str]:
        """The payments service's settings for the provider sandboxes this stack runs."""
        env: dict[str, str] = {}
        urls = {p: self.provider_url(p) for p in PROVIDER_SANDBOXES if p not in self.real_providers}
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

    def database_names(self) -> list[str]:
        """The databases this stack's services use, or would, on its server (with the suffix):
        also those a start that failed part-way had already migrated."""
        return [spec.database + self.db_suffix for spec in SPECS.values() if service_exists(spec)]

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
