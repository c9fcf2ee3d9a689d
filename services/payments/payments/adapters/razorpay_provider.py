"""The Razorpay adapter: the PaymentProvider port over the official `razorpay` SDK, its blocking
calls on a bounded thread pool.

A Razorpay order is the checkout; the customer pays it with Checkout.js (or the sandbox's page),
which hands `razorpay_order_id|razorpay_payment_id` back signed with HMAC-SHA256 under the key
secret; the payment (`pay_...`) is the domain's payment. Razorpay's statuses, errors and event
names stop here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError, SignatureVerificationError

from hirepay_platform.untrusted import loads_json
from payments.adapters import razorpay_disputes
from payments.adapters.blocking import BlockingCalls
from payments.domain.disputes import ProviderDispute
from payments.domain.provider import (
    AuthorizeRequest,
    CheckoutRequest,
    CheckoutReturn,
    CheckoutState,
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

_STATUS = {
    "created": ProviderStatus.ACTION_REQUIRED,  # the customer is at the bank's page
    "authorized": ProviderStatus.AUTHORIZED,
    "captured": ProviderStatus.CAPTURED,
    "failed": ProviderStatus.FAILED,
}
MAX_NOTES = 15
# Razorpay's description of an unknown payment, order or refund id.
UNKNOWN_ID = "the id provided does not exist"
# Razorpay has no void: an authorization never captured is refunded by Razorpay itself once the
# account's capture window has passed (5 days per the Refunds API documentation; configurable
# per account, shorter never hurts here).
DEFAULT_AUTO_REFUND_AFTER = timedelta(days=5)
# Refund lists are read 100 at a time (Razorpay's largest `count`), 10 pages at most.
REFUND_PAGE = 100
MAX_REFUND_PAGES = 10
# Refunds, whoever made them (Hirepay, the Razorpay dashboard, Razorpay's own auto-refund of an
# authorization never captured): each event carries the refund and its payment, and each
# re-fetches every refund of the payment (provider_refunds.py), so any one of them brings the
# payment up to date (`refund.created` and `refund.processed` come together in test mode).
REFUND_EVENT_TYPES = frozenset({"refund.created", "refund.processed", "refund.failed"})


def map_error(exc: BaseException) -> BaseException:
    """The domain failure for an SDK (or transport) exception.

    Razorpay answers an unknown id with `400 BAD_REQUEST_ERROR` "The id provided does not
    exist", and the SDK keeps neither the HTTP status nor any finer code: that description is
    the provider saying "not found", mapped to the port's 404 (`resource_missing`) so a payment
    Razorpay does not know becomes final like any provider's."""
    if isinstance(exc, BadRequestError):
        message = str(exc) or "bad request"
        if "authentication" in message.lower():
            return OutcomeUnknown("provider refused our credentials", timeout=False)
        if message.strip().rstrip(".").lower() == UNKNOWN_ID:
            return InvalidRequest(message, code="resource_missing", status=404)
        return InvalidRequest(message, code="bad_request_error")
    if isinstance(exc, GatewayError | ServerError):
        return OutcomeUnknown(f"provider error ({type(exc).__name__})", timeout=False)
    if isinstance(exc, requests.Timeout | TimeoutError):
        return OutcomeUnknown("provider timed out", timeout=True)
    if isinstance(exc, requests.RequestException | OSError | ValueError):
        # ValueError: a non-JSON answer (a proxy's 5xx page) is no usable answer either.
        return OutcomeUnknown("provider unreachable", timeout=False)
    return exc


def _notes(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def payment_from(
    data: Mapping[str, Any], auto_refund_after: timedelta = DEFAULT_AUTO_REFUND_AFTER
) -> ProviderPayment:
    """A Razorpay payment in the domain's words. An authorization Razorpay releases by itself
    (its auto-refund, status `refunded` with `captured` false) is CANCELED; until then it is
    AUTHORIZED with `release_due` saying by when (a void here is not capturing it)."""
    status = _STATUS.get(str(data.get("status")), ProviderStatus.AWAITING_PAYMENT)
    captured = bool(data.get("captured"))
    if data.get("status") == "refunded":
        # Refunded after a capture is still a captured payment (refunds are ours to track); an
        # authorization refunded without a capture is Razorpay's void.
        status = ProviderStatus.CAPTURED if captured else ProviderStatus.CANCELED
    amount = int(data.get("amount") or 0)
    error = None
    if status is ProviderStatus.FAILED:
        error = ProviderErrorInfo(
            code=str(data.get("error_code") or "payment_failed").lower(),
            decline_code=str(data.get("error_reason") or ""),
            message=str(data.get("error_description") or "The payment failed"),
        )
    return ProviderPayment(
        id=str(data["id"]),
        status=status,
        amount_minor=amount,
        currency=str(data.get("currency") or "").upper(),
        amount_capturable=amount if status is ProviderStatus.AUTHORIZED else 0,
        amount_received=amount if captured else 0,
        amount_refunded=int(data.get("amount_refunded") or 0),
        last_error=error,
        metadata=_notes(data.get("notes")),
        release_due=_release_due(data, auto_refund_after)
        if status is ProviderStatus.AUTHORIZED
        else None,
    )


def _release_due(data: Mapping[str, Any], auto_refund_after: timedelta) -> datetime | None:
    created = data.get("created_at")
    if not created:
        return None
    return datetime.fromtimestamp(int(created), UTC) + auto_refund_after


def refund_from(data: Mapping[str, Any], amount_minor: int = 0) -> ProviderRefund:
    """A Razorpay refund (`processed`, `pending` or `failed`) in the domain's words."""
    status = str(data.get("status") or "processed")
    state = {"processed": RefundState.SUCCEEDED, "pending": RefundState.PENDING}.get(
        status, RefundState.FAILED
    )
    return ProviderRefund(
        id=str(data["id"]),
        state=state,
        amount_minor=int(data.get("amount") or amount_minor),
        # Hirepay's own refunds carry their record in the notes (`hirepay_refund_id`, or a
        # plan purchase's `transaction_id`); a dashboard refund has none of ours.
        metadata=_notes(data.get("notes")),
    )


class RazorpayProvider:
    """PaymentProvider backed by Razorpay (or the Razorpay-compatible sandbox)."""

    name = "razorpay"
    refunds_by_event = True  # refund.created, refund.processed, refund.failed

    def __init__(
        self,
        key_id: str,
        key_secret: str,
        calls: BlockingCalls,
        *,
        api_base: str = "",
        webhook_secret: str = "",
        checkout_url: str = "",
        auto_refund_after: timedelta = DEFAULT_AUTO_REFUND_AFTER,
    ) -> None:
        self._calls = calls
        self._auto_refund_after = auto_refund_after
        self._webhook_secret = webhook_secret
        base = api_base.rstrip("/")
        options = {"base_url": base} if base else {}
        self.client = razorpay.Client(auth=(key_id, key_secret), **options)
        self.client.enable_retry(False)  # retries are ours; a capture has no idempotency key
        # The page the customer pays an order on: the sandbox's stand-in for Checkout.js by
        # default, or the merchant's own page that runs Checkout.js in production.
        self._checkout_url = checkout_url or (
            f"{base}/checkout/{{order_id}}?callback_url={{callback_url}}" if base else ""
        )

    async def _run(self, fn: Callable[[], Any]) -> Any:
        try:
            return await self._calls.run(fn)
        except BaseException as exc:
            mapped = map_error(exc)
            if mapped is exc:
                raise
            raise mapped from None

    def _timeout(self) -> float:
        return self._calls.timeout

    # --- payments ---------------------------------------------------------------------------

    def accepts_payment_method(self, token: str) -> bool:
        """Razorpay payments are made on its checkout: no token is taken server-side."""
        return False

    async def create_customer(self, email: str, idempotency_key: str) -> str:
        return ""

    async def authorize(self, request: AuthorizeRequest, idempotency_key: str) -> ProviderPayment:
        raise InvalidRequest(
            "Razorpay payments are made on Razorpay's checkout; use a checkout",
            code="payment_method_not_supported",
            param="payment_method",
        )

    async def retrieve_payment(self, payment_id: str) -> ProviderPayment:
        data = await self._run(
            lambda: self.client.payment.fetch(payment_id, timeout=self._timeout())
        )
        return payment_from(data, self._auto_refund_after)

    async def capture(
        self, payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPayment:
        """Razorpay captures the whole authorization and takes no idempotency key: after a lost
        answer the payment is read again (a second capture is refused, never doubled)."""
        current = await self.retrieve_payment(payment_id)
        if current.status is not ProviderStatus.AUTHORIZED:
            return current
        if amount_minor and amount_minor != current.amount_minor:
            raise InvalidRequest("Razorpay captures the whole authorized amount", code="amount")
        data = await self._run(
            lambda: self.client.payment.capture(
                payment_id,
                current.amount_minor,
                {"currency": current.currency},
                timeout=self._timeout(),
            )
        )
        return payment_from(data, self._auto_refund_after)

    async def cancel(self, payment_id: str, idempotency_key: str) -> ProviderPayment:
        """Razorpay has no void: an authorization never captured is refunded to the customer by
        Razorpay itself. Not capturing it is the cancel, so it is reported cancelled."""
        current = await self.retrieve_payment(payment_id)
        return current.abandoned(
            ProviderStatus.AUTHORIZED,
            ProviderStatus.ACTION_REQUIRED,
            ProviderStatus.AWAITING_PAYMENT,
            ProviderStatus.FAILED,
        )

    async def refund(
        self,
        payment_id: str,
        amount_minor: int,
        reason: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderRefund:
        # X-Refund-Idempotency takes 10+ of A-Za-z0-9_-: a digest of our key keeps it unique.
        key = "hp_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
        notes = {"reason": reason[:250], **{k: v[:250] for k, v in metadata.items()}}
        data = await self._run(
            lambda: self.client.payment.refund(
                payment_id,
                {"amount": amount_minor, "notes": dict(list(notes.items())[:MAX_NOTES])},
                headers={"X-Refund-Idempotency": key},
                timeout=self._timeout(),
            )
        )
        return refund_from(data, amount_minor)

    async def list_refunds(self, payment_id: str) -> list[ProviderRefund]:
        """The payment's refunds (`GET /v1/payments/:id/refunds`), every page."""
        found: list[ProviderRefund] = []
        for page in range(MAX_REFUND_PAGES):
            query = {"count": REFUND_PAGE, "skip": page * REFUND_PAGE}
            data = await self._run(
                lambda q=query: self.client.payment.fetch_multiple_refund(  # type: ignore[misc]
                    payment_id, q, timeout=self._timeout()
                )
            )
            items = list(data.get("items") or [])
            found += [refund_from(item) for item in items]
            if len(items) < REFUND_PAGE:
                return found
        raise OutcomeUnknown("too many refunds to list", timeout=False)

    # --- disputes (payment.dispute.*) --------------------------------------------------------

    async def retrieve_dispute(self, dispute_id: str) -> ProviderDispute:
        """The dispute (`GET /v1/disputes/:id`, the SDK's Disputes API)."""
        data = await self._run(
            lambda: self.client.dispute.fetch(dispute_id, timeout=self._timeout())
        )
        return razorpay_disputes.dispute_from(data)

    # --- checkout -------------------------------------------------------------------------------

    async def _order_by_receipt(self, receipt: str) -> dict[str, Any] | None:
        """An order made earlier for this receipt (a create whose answer was lost)."""
        found = await self._run(
            lambda: self.client.order.all(
                {"receipt": receipt, "count": 100}, timeout=self._timeout()
            )
        )
        for order in found.get("items") or []:
            if order.get("receipt") == receipt:
                return dict(order)
        return None

    async def create_checkout(
        self, request: CheckoutRequest, idempotency_key: str
    ) -> ProviderCheckout:
        """Razorpay orders take no idempotency key: the receipt is ours (the key's digest), and
        an order already made for it is reused."""
        receipt = "hp_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:37]
        order = await self._order_by_receipt(receipt)
        if order is None:
            notes = dict(list(request.metadata.items())[:MAX_NOTES])
            body = {
                "amount": request.amount_minor,
                "currency": request.currency,
                "receipt": receipt,
                "notes": {k: v[:256] for k, v in notes.items()},
                "payment_capture": not request.manual_capture,
            }
            order = await self._run(lambda: self.client.order.create(body, timeout=self._timeout()))
        return self._checkout_from(order, None, request.confirm_url)

    def _checkout_from(
        self, order: Mapping[str, Any], payment: Mapping[str, Any] | None, callback: str = ""
    ) -> ProviderCheckout:
        order_id = str(order["id"])
        url = ""
        if self._checkout_url and callback:
            url = self._checkout_url.replace("{order_id}", order_id).replace(
                "{callback_url}", quote(callback, safe="")
            )
        paid = order.get("status") == "paid"
        return ProviderCheckout(
            id=order_id,
            state=CheckoutState.COMPLETE if paid else CheckoutState.OPEN,
            paid=bool(paid and payment is not None and payment.get("captured")),
            url=url,
            expires_at=None,
            payment_id=str(payment["id"]) if payment else "",
            amount_minor=int(order.get("amount") or 0),
            currency=str(order.get("currency") or "").upper(),
            metadata=_notes(order.get("notes")),
        )

    async def expire_checkout(self, checkout_id: str, idempotency_key: str) -> ProviderCheckout:
        raise InvalidRequest("Razorpay orders cannot be expired", code="not_supported")

    async def retrieve_checkout(self, checkout_id: str) -> ProviderCheckout:
        order = await self._run(
            lambda: self.client.order.fetch(checkout_id, timeout=self._timeout())
        )
        found = await self._run(
            lambda: self.client.order.payments(checkout_id, timeout=self._timeout())
        )
        payments = list(found.get("items") or [])
        # The payment that took (or holds) the money, else the latest attempt.
        rank = {"captured": 3, "refunded": 3, "authorized": 2, "created": 1, "failed": 0}
        best = max(
            payments,
            key=lambda p: (rank.get(str(p.get("status")), 0), int(p.get("created_at") or 0)),
            default=None,
        )
        return self._checkout_from(order, best)

    async def verify_return(self, params: Mapping[str, str]) -> CheckoutReturn:
        """Checkout's callback: `razorpay_signature` = HMAC-SHA256(order_id|payment_id, key
        secret), checked by the SDK. A failure callback carries no signature: only the order is
        taken from it, and its state is read from Razorpay."""
        if params.get("razorpay_signature") or params.get("razorpay_payment_id"):
            fields = ("razorpay_order_id", "razorpay_payment_id", "razorpay_signature")
            values = {name: params.get(name, "") for name in fields}
            if not all(values.values()):
                raise SignatureInvalid("incomplete Razorpay callback")
            try:
                self.client.utility.verify_payment_signature(values)
            except SignatureVerificationError:
                raise SignatureInvalid("Razorpay payment signature mismatch") from None
            return CheckoutReturn(
                checkout_id=values["razorpay_order_id"], payment_id=values["razorpay_payment_id"]
            )
        try:
            meta = json.loads(params.get("error[metadata]", "") or "{}")
        except ValueError:
            meta = {}
        if not isinstance(meta, dict) or not str(meta.get("order_id", "")).startswith("order_"):
            raise SignatureInvalid("not a Razorpay callback")
        return CheckoutReturn(checkout_id=str(meta["order_id"]))

    # --- webhooks -----------------------------------------------------------------------------

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """`X-Razorpay-Signature` = hex HMAC-SHA256(raw body, webhook secret), checked by the
        SDK; the event id is `X-Razorpay-Event-Id` (the same on every retry)."""
        signature = headers.get("x-razorpay-signature", "")
        event_id = headers.get("x-razorpay-event-id", "")
        if not self._webhook_secret or not signature or not event_id:
            raise SignatureInvalid("missing signature, event id or webhook secret")
        try:
            text = payload.decode("utf-8")
            self.client.utility.verify_webhook_signature(text, signature, self._webhook_secret)
            body = loads_json(text)  # depth-limited: still untrusted
        except (UnicodeDecodeError, SignatureVerificationError):
            raise SignatureInvalid("Razorpay webhook signature mismatch") from None
        except ValueError:
            raise SignatureInvalid("signed body is not a Razorpay event") from None
        return event_from(event_id, body)


def event_from(event_id: str, body: dict[str, Any]) -> ProviderEvent:
    """Payment and order events are about the order (the checkout), whose payment is re-read;
    refund events (REFUND_EVENT_TYPES) about the refund of their payment, whose refunds are
    re-fetched; dispute events (razorpay_disputes) about the dispute, re-fetched. The parsed delivery goes with it (stored as the event's payload: parsed once,
    issue 13)."""
    payload = body.get("payload") or {}
    payment = (payload.get("payment") or {}).get("entity") or {}
    order = (payload.get("order") or {}).get("entity") or {}
    refund = (payload.get("refund") or {}).get("entity") or {}
    dispute = (payload.get("dispute") or {}).get("entity") or {}
    order_id = str(order.get("id") or payment.get("order_id") or "")
    kind = str(body.get("event") or "")
    subject = EventSubject.OTHER
    object_id = str(payment.get("id") or "")
    if kind in REFUND_EVENT_TYPES:
        subject, object_id = EventSubject.REFUND, str(refund.get("id") or "")
    elif kind in razorpay_disputes.DISPUTE_EVENT_TYPES:
        # Before the payment events: a dispute event carries its payment (and its order) too.
        subject, object_id = EventSubject.DISPUTE, str(dispute.get("id") or "")
    elif order_id and kind.split(".")[0] in ("payment", "order"):
        subject, object_id = EventSubject.CHECKOUT, order_id
    created = body.get("created_at")
    return ProviderEvent(
        id=event_id,
        type=kind,
        created=datetime.fromtimestamp(int(created), UTC) if created else datetime.now(UTC),
        subject=subject,
        object_id=object_id,
        metadata=_notes(order.get("notes") or payment.get("notes")),
        payment_id=str(payment.get("id") or refund.get("payment_id") or ""),
        body=body,
    )
