"""A card posting's two Stripe webhooks through the real Stripe adapter (API-3, issue 13): an
authorization and its capture are made through `StripeProvider` (its SDK client answering as
Stripe does), then the two events Stripe sends for them (`payment_intent.amount_capturable_updated`,
`payment_intent.succeeded`), signed and parsed by the adapter as delivered. Each tells nothing the
request did not record already: it costs one statement (stored, its payment read), no request to
Stripe and no change; delivered again, it is a duplicate. A guard of the already-settled path
(paywh15 measured it at one statement and no provider call per webhook in a posting stack)."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import stripe
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from payments.adapters.stripe_provider import StripeProvider
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands
from payments.domain.model import PaymentState
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.webhooks import handle_provider_event
from payments.service_layer.in_flight import InFlight
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_helpers import authorize_command

SECRET = "whsec_paywh15"
_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))


class _Stripe(stripe.HTTPClient):
    """Answers the SDK's requests as Stripe does for a manual-capture card PaymentIntent (the
    SDK's documented HTTP client extension point) and counts them."""

    name = "paywh15"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []
        self.intents: dict[str, dict[str, Any]] = {}

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, dict[str, str]]:
        self.requests.append(f"{method} {url}")
        form = dict(parse_qsl(post_data or ""))
        if url.endswith("/v1/payment_intents"):
            intent = {
                "id": f"pi_{next(_IDS)}", "object": "payment_intent", "status": "requires_capture",
                "amount": int(form["amount"]), "amount_capturable": int(form["amount"]),
                "amount_received": 0, "currency": form["currency"], "capture_method": "manual",
                "customer": None, "last_payment_error": None, "next_action": None,
                "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            }  # fmt: skip
        elif method == "get":  # a re-fetch: the intent as it stands
            intent = self.intents[url.rsplit("/", 1)[-1]]
        else:  # .../capture
            intent = self.intents[url.rsplit("/", 2)[-2]]
            intent = {**intent, "status": "succeeded", "amount_capturable": 0}
            intent["amount_received"] = intent["amount"]
        self.intents[intent["id"]] = intent
        return json.dumps(intent).encode(), 200, {"Request-Id": f"req_{len(self.requests)}"}

    async def close_async(self) -> None:
        return None

    def delivery(
        self, intent_id: str, event_type: str, view: dict[str, Any] | None = None
    ) -> commands.ProviderEventDelivery:
        """The event Stripe sends with the intent as it stands now (or as `view`), signed."""
        body = json.dumps(
            {
                "id": f"evt_{next(_IDS)}",
                "object": "event",
                "type": event_type,
                "created": int(time.time()),
                "livemode": False,
                "pending_webhooks": 1,
                "data": {"object": view or self.intents[intent_id]},
            }
        )
        signed = stripe.WebhookSignature.generate_signature_header(body, SECRET)
        return commands.ProviderEventDelivery(
            "stripe", body.encode(), headers={"stripe-signature": signed}
        )


async def test_a_postings_two_webhooks_cost_a_statement_each_and_no_stripe_request(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    answers = _Stripe()
    provider = StripeProvider("sk_test_paywh15", webhook_secrets=[SECRET])
    provider.client = stripe.StripeClient(
        "sk_test_paywh15", http_client=answers, max_network_retries=0
    )
    in_flight = InFlight()

    def deps() -> Deps:
        return Deps(
            SqlPaymentsUnitOfWork(sessions),
            ProviderRegistry([provider]),
            Policy(provider_timeout=1, poll_base=1, poll_max=4),
            in_flight=in_flight,
        )

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    async def deliver_twice(delivery: commands.ProviderEventDelivery) -> None:
        """Delivered, then delivered again: nothing new, a duplicate; a statement each."""
        statements.clear()
        sa_event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            outcome = await handle_provider_event(delivery, deps())
            again = await handle_provider_event(delivery, deps())
        finally:
            sa_event.remove(engine.sync_engine, "before_cursor_execute", count)
        assert (outcome.applied, outcome.duplicate) == (False, False)
        assert (again.applied, again.duplicate) == (False, True)
        assert len(statements) == 2, statements  # one per delivery: stored, its payment read

    gtx = f"gtx-{next(_IDS)}"
    payment = (await handlers.authorize(authorize_command(gtx), deps())).payment
    assert payment is not None and payment.state is PaymentState.AUTHORIZED
    intent = payment.provider_payment_id
    as_authorized = dict(answers.intents[intent])
    await deliver_twice(answers.delivery(intent, "payment_intent.amount_capturable_updated"))
    captured = (
        await handlers.capture(commands.Capture(f"c-{gtx}", payment.branch), deps())
    ).payment
    assert captured is not None and captured.state is PaymentState.CAPTURED
    await deliver_twice(answers.delivery(intent, "payment_intent.succeeded"))
    # The authorization's event delivered late (after the capture): a stale view, no change.
    late = answers.delivery(intent, "payment_intent.amount_capturable_updated", as_authorized)
    await deliver_twice(late)
    made = list(answers.requests)
    assert [r.split("/v1/", 1)[-1] for r in made] == [
        "payment_intents",
        f"payment_intents/{intent}/capture",
    ]
    # (no re-fetch from Stripe: only the authorize and the capture were sent)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        found = await uow.payments.get(payment.id)
    assert found is not None and found.state is PaymentState.CAPTURED
    assert found.captured_minor == payment.amount_minor
