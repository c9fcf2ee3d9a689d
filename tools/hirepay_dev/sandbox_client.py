"""Drive the Stripe sandbox from tests: start it, configure the official SDK against it, and use
its admin API (faults, settlement, payouts, webhook deliveries, clock) and hosted pages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from hirepay_dev.procs import Process, free_port, http_ready, python_module
from hirepay_dev.sandbox_admin import AdminApi

if TYPE_CHECKING:
    import stripe

DEFAULT_API_KEY = "sk_test_hirepaysandbox"


def start_sandbox(
    name: str = "sandbox", port: int | None = None, env: Mapping[str, str] | None = None
) -> tuple[Process, str]:
    """Start `python -m stripe_sandbox` on a free port; returns the process and its base URL.

    `env` takes the SANDBOX_* settings, e.g. SANDBOX_WEBHOOK_URL, SANDBOX_WEBHOOK_SECRET,
    SANDBOX_WEBHOOK_RETRY_BASE, SANDBOX_SETTLE_AFTER. Stop it with `process.stop()`.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    process = Process(
        name=name,
        argv=python_module("stripe_sandbox", "--port", str(port)),
        env=dict(env or {}),
        ready=http_ready(f"{url}/_sandbox/health"),
    ).start()
    return process, url


def stripe_client(
    base_url: str,
    api_key: str = DEFAULT_API_KEY,
    *,
    timeout: float = 80.0,
    allow_sync: bool = False,
) -> stripe.StripeClient:
    """The official SDK client pointed at the sandbox, configured as the payments service is.

    Use its `_async` methods (`await client.v1.payment_intents.create_async(params=...,
    options={"idempotency_key": ...})`); pass `allow_sync=True` to also use the sync ones.
    """
    import stripe

    return stripe.StripeClient(
        api_key,
        base_addresses={"api": base_url},
        http_client=stripe.HTTPXClient(timeout=timeout, allow_sync_methods=allow_sync),
        max_network_retries=0,
    )


class SandboxAdmin(AdminApi):
    """The Stripe sandbox's admin API (AdminApi, and its own calls below) and its hosted pages."""

    def webhook_backlog(self) -> dict[str, int]:
        """Deliveries by status (pending, succeeded, failed...) and `scheduled`: waiting to go."""
        backlog: dict[str, int] = self.call("GET", "/_sandbox/webhooks/backlog")
        return backlog

    # -- completing payments ---------------------------------------------------------------

    def settle_payment_intent(
        self, intent: str, outcome: str = "succeeded", failure_code: str | None = None
    ) -> dict[str, Any]:
        """Clear (`succeeded`) or bounce (`failed`) a bank debit that is `processing`."""
        body = {"outcome": outcome, **({"failure_code": failure_code} if failure_code else {})}
        result: dict[str, Any] = self.call(
            "POST", f"/_sandbox/payment_intents/{intent}/settle", body
        )
        return result

    def authenticate_payment_intent(
        self, intent: str, outcome: str = "succeeded"
    ) -> dict[str, Any]:
        """Complete (`succeeded`) or fail a 3-D Secure challenge without the page."""
        result: dict[str, Any] = self.call(
            "POST", f"/_sandbox/payment_intents/{intent}/authenticate", {"outcome": outcome}
        )
        return result

    def settle_payout(
        self, payout: str, outcome: str = "paid", failure_code: str | None = None
    ) -> dict[str, Any]:
        body = {"outcome": outcome, **({"failure_code": failure_code} if failure_code else {})}
        result: dict[str, Any] = self.call("POST", f"/_sandbox/payouts/{payout}/settle", body)
        return result

    def dispute_payment_intent(
        self,
        intent: str,
        reason: str = "fraudulent",
        inquiry: bool = False,
        settlement: tuple[str, float] | None = None,
    ) -> dict[str, Any]:
        """The cardholder disputes the intent's captured charge (Stripe: a chargeback with its
        funds withdrawn, or an inquiry); the dispute as opened. `settlement` (currency, rate):
        the account settles in another currency, where the dispute's money is booked."""
        body: dict[str, Any] = {"reason": reason, "inquiry": inquiry}
        if settlement is not None:
            body |= {"settlement_currency": settlement[0], "exchange_rate": settlement[1]}
        result: dict[str, Any] = self.call(
            "POST", f"/_sandbox/payment_intents/{intent}/dispute", body
        )
        return result

    def close_dispute(self, dispute: str, outcome: str = "won") -> dict[str, Any]:
        """The network decides a dispute: `won` (funds reinstated), `lost`, `warning_closed`."""
        result: dict[str, Any] = self.call(
            "POST", f"/_sandbox/disputes/{dispute}/close", {"outcome": outcome}
        )
        return result

    def fail_refund(
        self, refund: str, failure_reason: str = "expired_or_canceled_card"
    ) -> dict[str, Any]:
        """A succeeded refund fails since (Stripe: succeeded -> failed, the card closed)."""
        result: dict[str, Any] = self.call(
            "POST", f"/_sandbox/refunds/{refund}/fail", {"failure_reason": failure_reason}
        )
        return result

    # -- hosted pages, as a person would use them ------------------------------------------

    def pay_checkout(
        self,
        session_url: str,
        card_number: str = "4242 4242 4242 4242",
        exp: str = "12 / 34",
        cvc: str = "123",
    ) -> httpx.Response:
        """Press Pay on a Checkout page; a 303 redirect is success (or a 3-D Secure step)."""
        form = {"card_number": card_number, "exp": exp, "cvc": cvc}
        return self.http.post(f"{session_url.rstrip('/')}/pay", data=form)

    def cancel_checkout(self, session_url: str) -> httpx.Response:
        return self.http.get(f"{session_url.rstrip('/')}/cancel")

    def answer_3ds(self, redirect_url: str, approve: bool = True) -> httpx.Response:
        """Complete or fail the challenge at `next_action.redirect_to_url.url`."""
        return self.http.post(redirect_url, data={"action": "approve" if approve else "fail"})
