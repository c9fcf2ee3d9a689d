"""The PayPal adapter: the PaymentProvider port over the official `paypal-server-sdk` (Orders v2,
Payments v2), its blocking calls on a bounded thread pool.

A PayPal order is both the checkout and the payment: the buyer approves it on PayPal's page, then
the merchant completes it (capture, or authorize for a later capture). Completing an approved
order is what paying means in the domain, so reading an approved order completes it, keyed by
the order (`PayPal-Request-Id`), so a repeat never completes it twice. PayPal's statuses, issues
and event types stop here.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import requests
from paypalserversdk.configuration import Configuration, Environment, Server
from paypalserversdk.exceptions.api_exception import ApiException
from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
from paypalserversdk.models.amount_with_breakdown import AmountWithBreakdown
from paypalserversdk.models.capture_request import CaptureRequest
from paypalserversdk.models.checkout_payment_intent import CheckoutPaymentIntent
from paypalserversdk.models.money import Money
from paypalserversdk.models.order_application_context import OrderApplicationContext
from paypalserversdk.models.order_request import OrderRequest
from paypalserversdk.models.purchase_unit_request import PurchaseUnitRequest
from paypalserversdk.models.refund_request import RefundRequest
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from hirepay_platform import money
from hirepay_platform.untrusted import loads_json
from payments.adapters import paypal_disputes
from payments.adapters.blocking import BlockingCalls
from payments.domain.disputes import ProviderDispute
from payments.domain.provider import (
    AuthorizeRequest,
    CheckoutRequest,
    CheckoutReturn,
    CheckoutState,
    Declined,
    EventSubject,
    InvalidRequest,
    OutcomeUnknown,
    ProviderCheckout,
    ProviderErrorInfo,
    ProviderEvent,
    ProviderPayment,
    ProviderRefund,
    ProviderStatus,
    RefundState,
    SignatureInvalid,
)

# Issues that mean the buyer's funding was refused (the order may be approved again).
_DECLINES = frozenset({"INSTRUMENT_DECLINED", "PAYER_ACTION_REQUIRED", "TRANSACTION_REFUSED"})
# Issues that mean "a twin with this PayPal-Request-Id is still running": no usable answer yet.
_IN_FLIGHT = frozenset({"PREVIOUS_REQUEST_IN_PROGRESS"})
_CHECKOUT_EVENTS = frozenset({"checkout-order", "capture", "authorization"})
# Refunds, whoever made them (Hirepay, the PayPal dashboard, PayPal reversing a capture): the
# resource of both is the refund, its `up` link the capture it refunds (the capture's
# `supplementary_data` names the order, which is the domain's payment). Each event re-fetches
# every refund of the order (provider_refunds.py), so either one brings the payment up to date.
REFUND_EVENT_TYPES = frozenset({"PAYMENT.CAPTURE.REFUNDED", "PAYMENT.CAPTURE.REVERSED"})
# Refund metadata Hirepay keeps in a refund's `custom_id` (PayPal has no metadata map): the key
# and its value joined by ":" (`hirepay_refund_id:rfd_...`, `transaction_id:txn_...`), so a
# refund read back tells Hirepay's own (and which record it is) from one made at PayPal.
_REFUND_MARKS = ("hirepay_refund_id", "transaction_id")
MAX_REMEMBERED_DECLINES = 10_000


def _minor(value: str, currency: str) -> int:
    return int(Decimal(value or "0").scaleb(money.exponent(currency)))


def _major(amount_minor: int, currency: str) -> str:
    exp = money.exponent(currency)
    return f"{Decimal(amount_minor).scaleb(-exp):.{exp}f}"


def _issue(exc: ApiException) -> tuple[str, str]:
    """The first issue of a PayPal error and its description."""
    try:
        body = json.loads(exc.response.text or "{}")
    except ValueError:
        body = {}
    details = body.get("details") or [{}]
    issue = str(details[0].get("issue") or body.get("name") or "")
    return issue, str(details[0].get("description") or body.get("message") or exc.reason)


def map_error(exc: BaseException, order_id: str = "") -> BaseException:
    """The domain failure for an SDK (or transport) exception."""
    if isinstance(exc, ApiException):
        status = int(exc.response_code or 0)
        issue, message = _issue(exc)
        if status >= 500 or status in (401, 429) or issue in _IN_FLIGHT:
            return OutcomeUnknown(f"provider error (HTTP {status})", timeout=False)
        if issue in _DECLINES:
            info = ProviderErrorInfo(code=issue.lower(), message=message)
            return Declined(info, payment_id=order_id)
        return InvalidRequest(message, code=issue.lower(), status=status)
    if isinstance(exc, requests.Timeout | TimeoutError):
        return OutcomeUnknown("provider timed out", timeout=True)
    if isinstance(exc, requests.RequestException | OSError):
        return OutcomeUnknown("provider unreachable", timeout=False)
    return exc


def _units(order: Mapping[str, Any]) -> dict[str, Any]:
    units = order.get("purchase_units") or [{}]
    return dict(units[0])


def _link(resource: Mapping[str, Any], *rels: str) -> str:
    for item in resource.get("links") or []:
        if item.get("rel") in rels:
            return str(item.get("href") or "")
    return ""


def _payments(order: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    found = _units(order).get("payments") or {}
    return list(found.get("authorizations") or []), list(found.get("captures") or [])


def _refund_state(refund: Mapping[str, Any]) -> RefundState:
    status = str(refund.get("status") or "COMPLETED")
    return {"COMPLETED": RefundState.SUCCEEDED, "PENDING": RefundState.PENDING}.get(
        status, RefundState.FAILED
    )


def refund_mark(metadata: Mapping[str, str]) -> str | None:
    """The `custom_id` a refund of Hirepay's carries (None: no mark to give)."""
    for key in _REFUND_MARKS:
        if metadata.get(key):
            return f"{key}:{metadata[key]}"[:127]
    return None


def refund_from(refund: Mapping[str, Any]) -> ProviderRefund:
    """A PayPal refund in the domain's words; its `custom_id` read back as the metadata Hirepay
    gave it (a dashboard refund has none, or the merchant's own text: no metadata)."""
    key, _, value = str(refund.get("custom_id") or "").partition(":")
    amount = refund.get("amount") or {}
    return ProviderRefund(
        id=str(refund["id"]),
        state=_refund_state(refund),
        amount_minor=_minor(str(amount.get("value") or "0"), str(amount.get("currency_code"))),
        metadata={key: value} if key in _REFUND_MARKS and value else {},
    )


def payment_from(order: Mapping[str, Any]) -> ProviderPayment:
    """An order's payment in the domain's words (the order id is the payment's id)."""
    unit = _units(order)
    amount = unit.get("amount") or {}
    currency = str(amount.get("currency_code") or "")
    total = _minor(str(amount.get("value") or "0"), currency)
    authorizations, captures = _payments(order)
    done = [
        c for c in captures if c.get("status") in ("COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED")
    ]
    received = sum(_minor(c["amount"]["value"], currency) for c in done)
    status = ProviderStatus.ACTION_REQUIRED
    error = None
    if done:
        status = ProviderStatus.CAPTURED
    elif any(c.get("status") == "PENDING" for c in captures):
        status = ProviderStatus.PROCESSING
    elif any(c.get("status") in ("DECLINED", "FAILED") for c in captures):
        status = ProviderStatus.FAILED
        error = ProviderErrorInfo(code="capture_declined", message="PayPal declined the capture")
    elif authorizations:
        auth = authorizations[0].get("status")
        status = {
            "CREATED": ProviderStatus.AUTHORIZED,
            "PENDING": ProviderStatus.PROCESSING,
            "VOIDED": ProviderStatus.CANCELED,
            "EXPIRED": ProviderStatus.CANCELED,
            "DENIED": ProviderStatus.FAILED,
        }.get(str(auth), ProviderStatus.AUTHORIZED)
        if status is ProviderStatus.FAILED:
            error = ProviderErrorInfo(code="authorization_denied", message="PayPal denied it")
    elif order.get("status") == "VOIDED":
        status = ProviderStatus.CANCELED
    elif isinstance(order.get("_declined"), ProviderErrorInfo):
        status, error = ProviderStatus.FAILED, order["_declined"]
    return ProviderPayment(
        id=str(order["id"]),
        status=status,
        amount_minor=total,
        currency=currency,
        amount_capturable=total if status is ProviderStatus.AUTHORIZED else 0,
        amount_received=received,
        next_action_url=_link(order, "approve", "payer-action"),
        last_error=error,
        metadata=_metadata(unit),
    )


def checkout_from(order: Mapping[str, Any]) -> ProviderCheckout:
    unit = _units(order)
    amount = unit.get("amount") or {}
    currency = str(amount.get("currency_code") or "")
    status = str(order.get("status") or "")
    _, captures = _payments(order)
    state = {"COMPLETED": CheckoutState.COMPLETE, "VOIDED": CheckoutState.EXPIRED}.get(
        status, CheckoutState.OPEN
    )
    return ProviderCheckout(
        id=str(order["id"]),
        state=state,
        paid=any(c.get("status") == "COMPLETED" for c in captures),
        url=_link(order, "approve", "payer-action"),
        expires_at=None,
        # The order is the payment once the buyer approved it (completed, or declined).
        payment_id=(
            str(order["id"])
            if status in ("COMPLETED", "APPROVED") or order.get("_declined")
            else ""
        ),
        amount_minor=_minor(str(amount.get("value") or "0"), currency),
        currency=currency,
        metadata=_metadata(unit),
    )


def _metadata(unit: Mapping[str, Any]) -> dict[str, str]:
    return {"reference": str(unit["custom_id"])} if unit.get("custom_id") else {}


class PayPalProvider:
    """PaymentProvider backed by PayPal (or the PayPal-compatible sandbox)."""

    name = "paypal"
    refunds_by_event = True  # PAYMENT.CAPTURE.REFUNDED, PAYMENT.CAPTURE.REVERSED

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        calls: BlockingCalls,
        *,
        environment: str = "sandbox",
        api_base: str = "",
        webhook_id: str = "",
    ) -> None:
        self._calls = calls
        self._webhook_id = webhook_id
        self._credentials = (client_id, client_secret)
        env = Environment.PRODUCTION if environment == "production" else Environment.SANDBOX
        base = api_base.rstrip("/")

        class _Config(Configuration):
            # The SDK knows only PayPal's two hosts; every call asks this for its base.
            def get_base_uri(self, server: Server = Server.DEFAULT) -> str:
                return base or super().get_base_uri(server)

        self.client = PaypalServersdkClient(
            config=_Config(
                timeout=int(calls.timeout) or 1,
                max_retries=0,  # retries are ours, with the same PayPal-Request-Id
                environment=env,
                client_credentials_auth_credentials=ClientCredentialsAuthCredentials(
                    o_auth_client_id=client_id, o_auth_client_secret=client_secret
                ),
            )
        )
        self._base = base or (
            "https://api-m.paypal.com"
            if env is Environment.PRODUCTION
            else "https://api-m.sandbox.paypal.com"
        )
        self._http = httpx.AsyncClient(timeout=calls.timeout)
        self._token: tuple[str, float] = ("", 0.0)
        self._declines: dict[str, ProviderErrorInfo] = {}

    async def _run(self, fn: Callable[[], Any], order_id: str = "") -> dict[str, Any]:
        try:
            response = await self._calls.run(fn)
        except BaseException as exc:
            mapped = map_error(exc, order_id)
            if mapped is exc:
                raise
            raise mapped from None
        text = getattr(response, "text", "") or ""
        return dict(json.loads(text)) if text.strip() else {}

    # --- payments ---------------------------------------------------------------------------

    def accepts_payment_method(self, token: str) -> bool:
        """PayPal payments are approved by the buyer on PayPal's page: no token is taken."""
        return False

    async def create_customer(self, email: str, idempotency_key: str) -> str:
        return ""  # PayPal keeps the payer; the merchant keeps no customer record there

    async def authorize(self, request: AuthorizeRequest, idempotency_key: str) -> ProviderPayment:
        raise InvalidRequest(
            "PayPal payments are approved on PayPal's page; use a checkout",
            code="payment_method_not_supported",
            param="payment_method",
        )

    async def _order(self, order_id: str) -> dict[str, Any]:
        """The order, completed first if the buyer approved it. Each approval is completed under
        its own key (the order and the payer's approval), so a repeat never completes it twice
        and a new approval after a declined funding source is tried anew. A decline is kept on
        the re-read order as `_declined` (PayPal sends the buyer back to approve again)."""
        order = await self._run(lambda: self.client.orders.get_order({"id": order_id}), order_id)
        if order.get("status") != "APPROVED":
            # PayPal forgets a declined funding source once the order is back to CREATED; the
            # decline this process saw is kept until the buyer approves again.
            declined = self._declines.get(order_id)
            if declined is not None and order.get("status") == "CREATED":
                order["_declined"] = declined
            else:
                self._declines.pop(order_id, None)
            return order
        approval = str(order.get("update_time") or order.get("create_time") or "")
        options = {
            "id": order_id,
            "paypal_request_id": f"{order_id}:complete:{approval}"[:108],
            "prefer": "return=representation",
        }
        complete = (
            self.client.orders.authorize_order
            if order.get("intent") == "AUTHORIZE"
            else self.client.orders.capture_order
        )
        try:
            return await self._run(lambda: complete(options), order_id)
        except Declined as declined:
            again = await self._run(
                lambda: self.client.orders.get_order({"id": order_id}), order_id
            )
            if len(self._declines) >= MAX_REMEMBERED_DECLINES:  # bounded: drop the oldest
                self._declines.pop(next(iter(self._declines)))
            again["_declined"] = self._declines[order_id] = declined.error
            return again

    async def retrieve_payment(self, payment_id: str) -> ProviderPayment:
        return payment_from(await self._order(payment_id))

    async def capture(
        self, payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPayment:
        order = await self._order(payment_id)
        authorizations, _ = _payments(order)
        if not authorizations:
            raise InvalidRequest("the order has no authorization to capture", code="not_authorized")
        current = payment_from(order)
        body = CaptureRequest(final_capture=True)
        if amount_minor:
            body.amount = Money(
                currency_code=current.currency, value=_major(amount_minor, current.currency)
            )
        auth_id = authorizations[0]["id"]
        await self._run(
            lambda: self.client.payments.capture_authorized_payment(
                {"authorization_id": auth_id, "body": body, "paypal_request_id": idempotency_key}
            ),
            payment_id,
        )
        return payment_from(await self._order(payment_id))

    async def cancel(self, payment_id: str, idempotency_key: str) -> ProviderPayment:
        """Void the authorization. An order not approved yet holds no money at PayPal: it is
        reported cancelled (it lapses there by itself)."""
        order = await self._order(payment_id)
        authorizations, captures = _payments(order)
        if authorizations and authorizations[0].get("status") == "CREATED" and not captures:
            auth_id = authorizations[0]["id"]
            await self._run(
                lambda: self.client.payments.void_payment(
                    {"authorization_id": auth_id, "paypal_request_id": idempotency_key}
                ),
                payment_id,
            )
            return payment_from(await self._order(payment_id))
        return payment_from(order).abandoned(ProviderStatus.ACTION_REQUIRED, ProviderStatus.FAILED)

    async def refund(
        self,
        payment_id: str,
        amount_minor: int,
        reason: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderRefund:
        order = await self._order(payment_id)
        _, captures = _payments(order)
        # A REFUNDED capture too: the replay of a refund whose answer was lost (the poller's,
        # same PayPal-Request-Id) finds the capture refunded by that very refund, and PayPal
        # answers the replay with it; a new refund of it is refused by PayPal itself.
        done = [
            c
            for c in captures
            if c.get("status") in ("COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED")
        ]
        if not done:
            raise InvalidRequest("the order has no capture to refund", code="not_captured")
        currency = str(done[0]["amount"]["currency_code"])
        body = RefundRequest(
            amount=Money(currency_code=currency, value=_major(amount_minor, currency)),
            note_to_payer=reason[:255] or None,
            custom_id=refund_mark(metadata),
        )
        capture_id = done[0]["id"]
        data = await self._run(
            lambda: self.client.payments.refund_captured_payment(
                {
                    "capture_id": capture_id,
                    "body": body,
                    "paypal_request_id": idempotency_key,
                    "prefer": "return=representation",
                }
            ),
            payment_id,
        )
        return ProviderRefund(
            id=str(data.get("id") or ""), state=_refund_state(data), amount_minor=amount_minor
        )

    async def list_refunds(self, payment_id: str) -> list[ProviderRefund]:
        """The order's refunds, as its purchase unit lists them (`payments.refunds`); read
        without completing an approved order (reconciliation changes nothing). A listed refund
        without its `custom_id` is read whole (GET /v2/payments/refunds/{id}): the order's copy
        need not carry every field, and the mark is what tells Hirepay's own refund from one
        made at PayPal."""
        order = await self._run(
            lambda: self.client.orders.get_order({"id": payment_id}), payment_id
        )
        found = (_units(order).get("payments") or {}).get("refunds") or []
        refunds = []
        for listed in found:
            whole = listed
            if not listed.get("custom_id"):
                rid = str(listed["id"])
                whole = await self._run(
                    lambda rid=rid: self.client.payments.get_refund(  # type: ignore[misc]
                        {"refund_id": rid}
                    ),
                    payment_id,
                )
            refunds.append(refund_from(whole))
        return refunds

    async def _order_of_capture(self, capture_id: str) -> str:
        """The order a capture belongs to (`supplementary_data.related_ids.order_id`); "" for a
        capture PayPal does not know."""
        try:
            capture = await self._run(
                lambda: self.client.payments.get_captured_payment({"capture_id": capture_id})
            )
        except InvalidRequest as exc:
            if exc.status == 404:
                return ""
            raise
        related = (capture.get("supplementary_data") or {}).get("related_ids") or {}
        return str(related.get("order_id") or "")

    # --- disputes (CUSTOMER.DISPUTE.*) -------------------------------------------------------

    async def retrieve_dispute(self, dispute_id: str) -> ProviderDispute:
        """The dispute (`GET /v1/customer/disputes/{id}`), its payment the order of its captures
        (of several orders: each order's share, see paypal_disputes). The official SDK has no
        Disputes API: it is called over the adapter's own HTTP client with the OAuth token, as
        the webhook verification is; the captures are read through the SDK."""
        data = await self._get(f"/v1/customer/disputes/{quote(dispute_id, safe='')}")
        orders = [await self._order_of_capture(c) for c in paypal_disputes.captures_of(data)]
        if len(set(orders)) > 1:  # several orders (or one unknown): each booked its share
            return paypal_disputes.dispute_from(data, "", tuple(orders))
        return paypal_disputes.dispute_from(data, orders[0] if orders else "")

    async def _get(self, path: str) -> dict[str, Any]:
        """A GET of PayPal's REST API the SDK does not offer, its failures the port's."""
        try:
            response = await self._http.get(
                f"{self._base}{path}",
                headers={"Authorization": f"Bearer {await self._access_token()}"},
            )
        except httpx.TimeoutException:
            raise OutcomeUnknown("provider timed out", timeout=True) from None
        except httpx.HTTPError:
            raise OutcomeUnknown("provider unreachable", timeout=False) from None
        status = response.status_code
        if status >= 500 or status in (401, 429):
            raise OutcomeUnknown(f"provider error (HTTP {status})", timeout=False)
        try:
            body = loads_json(response.text or "{}")
        except ValueError:
            raise OutcomeUnknown("provider answered no JSON", timeout=False) from None
        if status != 200:
            issue = str(body.get("name") or "") if isinstance(body, dict) else ""
            message = str(body.get("message") or "") if isinstance(body, dict) else ""
            raise InvalidRequest(message or f"HTTP {status}", code=issue.lower(), status=status)
        return dict(body)

    # --- checkout -------------------------------------------------------------------------------

    async def create_checkout(
        self, request: CheckoutRequest, idempotency_key: str
    ) -> ProviderCheckout:
        body = OrderRequest(
            intent=(
                CheckoutPaymentIntent.AUTHORIZE
                if request.manual_capture
                else CheckoutPaymentIntent.CAPTURE
            ),
            purchase_units=[
                PurchaseUnitRequest(
                    amount=AmountWithBreakdown(
                        currency_code=request.currency,
                        value=_major(request.amount_minor, request.currency),
                    ),
                    custom_id=request.client_reference_id[:127],
                    description=request.product_name[:127],
                )
            ],
            application_context=OrderApplicationContext(
                return_url=request.success_url, cancel_url=request.cancel_url
            ),
        )
        data = await self._run(
            lambda: self.client.orders.create_order(
                {
                    "body": body,
                    "paypal_request_id": idempotency_key,
                    "prefer": "return=representation",
                }
            )
        )
        return checkout_from(data)

    async def expire_checkout(self, checkout_id: str, idempotency_key: str) -> ProviderCheckout:
        # PayPal has no call that closes an order: an unapproved one lapses by itself.
        raise InvalidRequest("PayPal orders cannot be expired", code="not_supported")

    async def retrieve_checkout(self, checkout_id: str) -> ProviderCheckout:
        return checkout_from(await self._order(checkout_id))

    async def verify_return(self, params: Mapping[str, str]) -> CheckoutReturn:
        """PayPal's return carries the order (`token`); trusted only as re-read from PayPal."""
        token = params.get("token", "")
        if not token:
            raise SignatureInvalid("no PayPal order token")
        return CheckoutReturn(checkout_id=token)

    # --- webhooks -----------------------------------------------------------------------------

    async def _access_token(self) -> str:
        token, expires = self._token
        now = datetime.now(UTC).timestamp()
        if token and now < expires - 60:
            return token
        basic = base64.b64encode(":".join(self._credentials).encode()).decode()
        response = await self._http.post(
            f"{self._base}/v1/oauth2/token",
            headers={"Authorization": f"Basic {basic}"},
            data={"grant_type": "client_credentials"},
        )
        response.raise_for_status()
        body = response.json()
        self._token = (str(body["access_token"]), now + float(body.get("expires_in") or 300))
        return self._token[0]

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify as PayPal documents: POST /v1/notifications/verify-webhook-signature with the
        transmission headers, our webhook id and the event exactly as received (the raw body is
        spliced in, never re-serialised, since the signature covers its CRC32)."""
        needed = (
            "transmission-id",
            "transmission-time",
            "transmission-sig",
            "cert-url",
            "auth-algo",
        )
        values = {name: headers.get(f"paypal-{name}", "") for name in needed}
        if not self._webhook_id or not all(values.values()):
            raise SignatureInvalid("missing PayPal transmission headers or webhook id")
        try:
            text = payload.decode("utf-8")
            event = loads_json(text)  # depth-limited: still untrusted
        except (UnicodeDecodeError, ValueError):
            raise SignatureInvalid("body is not a JSON event") from None
        fields = {
            "auth_algo": values["auth-algo"],
            "cert_url": values["cert-url"],
            "transmission_id": values["transmission-id"],
            "transmission_sig": values["transmission-sig"],
            "transmission_time": values["transmission-time"],
            "webhook_id": self._webhook_id,
        }
        body = json.dumps(fields)[:-1] + ', "webhook_event": ' + text + "}"
        try:
            response = await self._http.post(
                f"{self._base}/v1/notifications/verify-webhook-signature",
                content=body.encode(),
                headers={
                    "Authorization": f"Bearer {await self._access_token()}",
                    "Content-Type": "application/json",
                },
            )
        except httpx.TimeoutException:
            raise OutcomeUnknown("provider timed out", timeout=True) from None
        except httpx.HTTPError:
            raise OutcomeUnknown("provider unreachable", timeout=False) from None
        if response.status_code >= 500:
            raise OutcomeUnknown(f"provider error (HTTP {response.status_code})", timeout=False)
        if response.status_code != 200 or response.json().get("verification_status") != "SUCCESS":
            raise SignatureInvalid("PayPal did not verify the transmission")
        found = event_from(event)
        if found.subject is EventSubject.REFUND and not found.payment_id:
            # A refund names its capture, not the order the domain knows as the payment.
            capture_id = capture_of(event)
            order_id = await self._order_of_capture(capture_id) if capture_id else ""
            found = dataclasses.replace(found, payment_id=order_id)
        return found


def capture_of(event: Mapping[str, Any]) -> str:
    """The capture a refund event is about: the refund's `up` link (a reversal may carry the
    capture itself)."""
    resource = event.get("resource") or {}
    if event.get("resource_type") == "capture":
        return str(resource.get("id") or "")
    up = _link(resource, "up")
    if "/captures/" not in up:
        return ""
    return up.rsplit("/captures/", 1)[1].split("/")[0].split("?")[0]


def event_from(event: dict[str, Any]) -> ProviderEvent:
    """A verified PayPal event: orders and their captures/authorizations are about the order;
    refunds (REFUND_EVENT_TYPES) about the refund, their order named when the event carries it
    (else found by verify_event through the capture); disputes (paypal_disputes) about the
    dispute. The parsed delivery goes with it (stored
    as the event's payload: parsed once, issue 13)."""
    resource = event.get("resource") or {}
    kind = str(event.get("resource_type") or "")
    event_type = str(event.get("event_type") or "")
    subject, object_id = EventSubject.OTHER, str(resource.get("id") or "")
    payment_id = ""
    related = (resource.get("supplementary_data") or {}).get("related_ids") or {}
    if event_type in REFUND_EVENT_TYPES:
        subject, payment_id = EventSubject.REFUND, str(related.get("order_id") or "")
    elif event_type in paypal_disputes.DISPUTE_EVENT_TYPES:
        # The resource is the dispute (`dispute_id`), re-fetched with its capture's order.
        subject, object_id = EventSubject.DISPUTE, str(resource.get("dispute_id") or "")
    elif kind == "checkout-order":
        subject = EventSubject.CHECKOUT
    elif kind in _CHECKOUT_EVENTS and related.get("order_id"):
        subject, object_id = EventSubject.CHECKOUT, str(related["order_id"])
    if subject is EventSubject.CHECKOUT:
        payment_id = object_id
    created = datetime.now(UTC)
    if event.get("create_time"):
        created = datetime.fromisoformat(str(event["create_time"]).replace("Z", "+00:00"))
    return ProviderEvent(
        id=str(event["id"]),
        type=event_type,
        created=created,
        subject=subject,
        object_id=object_id,
        payment_id=payment_id,
        body=event,
    )
