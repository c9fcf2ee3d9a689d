"""The Fatora adapter: the PaymentProvider port over Fatora's public REST API (`/v1/payments/
checkout`, `verify`, `refund`, `api_key` header) with httpx; Fatora ships no SDK.

Fatora takes the payment on its hosted page at once (no separate authorization), keyed by the
merchant's `order_id`: our own id is the order id, so the checkout and the payment are both named
by it, and asking for the checkout again returns the same page. Fatora documents no idempotency
key: after a lost answer, `verify` tells what happened. Its statuses and errors stop here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from hirepay_platform import money
from hirepay_platform.untrusted import loads_json
from payments.adapters.http_pool import HTTPPool
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


def _major(amount_minor: int, currency: str) -> float:
    # Fatora takes a JSON number in major units with the currency's decimals (KWD: three).
    exp = money.exponent(currency)
    return float(Decimal(amount_minor).scaleb(-exp))


def _minor(value: Any, currency: str) -> int:
    return int(Decimal(str(value or 0)).scaleb(money.exponent(currency)))


def payment_from(result: Mapping[str, Any]) -> ProviderPayment:
    """A verify `result` in the domain's words (the order id names the payment)."""
    currency = str(result.get("currency") or "").upper()
    amount = _minor(result.get("amount"), currency)
    status = str(result.get("payment_status") or "PENDING")
    error = None
    if status == "SUCCESS":
        state = ProviderStatus.CAPTURED
    elif status == "FAILURE":
        state = ProviderStatus.FAILED
        error = ProviderErrorInfo(
            code="payment_failed",
            decline_code=str(result.get("description") or "").lower().replace(" ", "_")[:60],
            message=str(result.get("description") or "The payment failed"),
        )
    elif result.get("transaction_id"):
        state = ProviderStatus.PROCESSING  # submitted, the bank has not answered yet
    else:
        state = ProviderStatus.AWAITING_PAYMENT
    refunded = amount if result.get("refund_status") == "completed" else 0
    return ProviderPayment(
        id=str(result["order_id"]),
        status=state,
        amount_minor=amount,
        currency=currency,
        amount_received=amount if state is ProviderStatus.CAPTURED else 0,
        amount_refunded=refunded,
        last_error=error,
    )


def _refund_id(payment_id: str) -> str:
    """Fatora's one refund of a payment has no id of its own: ours is derived from the payment."""
    return f"{payment_id}:refund"


class FatoraProvider:
    """PaymentProvider backed by Fatora (or the Fatora-compatible sandbox)."""

    name = "fatora"
    # Fatora documents a refund endpoint and verify's `refund_status`, no refund event: a
    # refund made at its dashboard is found, and booked, by the reconciliation only.
    refunds_by_event = False

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str = "https://api.fatora.io",
        webhook_secret: str = "",
        timeout: float = 8.0,
        max_connections: int = 256,
    ) -> None:
        """`max_connections`: calls in flight at once, all kept alive (httpx's defaults, 100 and
        20, would queue calls beyond 100 and reopen connections after every burst), in one
        pool (http_pool.HTTPPool)."""
        self._webhook_secret = webhook_secret
        self._http = httpx.AsyncClient(
            base_url=api_base.rstrip("/"),
            headers={"api_key": api_key},
            timeout=timeout,
            transport=HTTPPool(max_connections=max_connections),
        )

    async def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One API call; the body's `status` (not only the HTTP status) says whether it worked."""
        try:
            response = await self._http.post(f"/v1/payments/{path}", json=dict(body))
        except httpx.TimeoutException:
            raise OutcomeUnknown("provider timed out", timeout=True) from None
        except httpx.HTTPError:
            raise OutcomeUnknown("provider unreachable", timeout=False) from None
        if response.status_code >= 500 or response.status_code in (401, 429):
            raise OutcomeUnknown(f"provider error (HTTP {response.status_code})", timeout=False)
        try:
            data = response.json()
        except ValueError:
            raise OutcomeUnknown("provider answered no JSON", timeout=False) from None
        if data.get("status") != "SUCCESS":
            raise InvalidRequest(
                str(data.get("error") or "refused"),
                code=f"http_{response.status_code}",
                status=response.status_code,
            )
        return dict(data.get("result") or {})

    # --- payments ---------------------------------------------------------------------------

    def accepts_payment_method(self, token: str) -> bool:
        """Fatora payments are made on its hosted page: no token is taken server-side."""
        return False

    async def create_customer(self, email: str, idempotency_key: str) -> str:
        return ""

    async def authorize(self, request: AuthorizeRequest, idempotency_key: str) -> ProviderPayment:
        raise InvalidRequest(
            "Fatora payments are made on Fatora's page; use a checkout",
            code="payment_method_not_supported",
            param="payment_method",
        )

    async def retrieve_payment(self, payment_id: str) -> ProviderPayment:
        return payment_from(await self._post("verify", {"order_id": payment_id}))

    async def list_refunds(self, payment_id: str) -> list[ProviderRefund]:
        """Fatora refunds a payment once, whole, and lists no refunds: verify's `refund_status`
        is the one refund there can be (named as `refund` names it)."""
        current = await self._post("verify", {"order_id": payment_id})
        status = str(current.get("refund_status") or "")
        if not status or status == "none":
            return []
        state = {"completed": RefundState.SUCCEEDED, "failed": RefundState.FAILED}.get(
            status, RefundState.PENDING
        )
        amount = payment_from(current).amount_minor
        return [ProviderRefund(id=_refund_id(payment_id), state=state, amount_minor=amount)]

    async def capture(
        self, payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPayment:
        current = await self.retrieve_payment(payment_id)
        if current.status is ProviderStatus.CAPTURED:
            return current  # Fatora captures at once; nothing is left to capture
        raise InvalidRequest("Fatora has no authorizations to capture", code="not_supported")

    async def cancel(self, payment_id: str, idempotency_key: str) -> ProviderPayment:
        """Fatora has nothing to cancel: an unpaid checkout is abandoned (reported cancelled,
        so it is never taken for payable again); a paid one must be refunded."""
        current = await self.retrieve_payment(payment_id)
        return current.abandoned(
            ProviderStatus.AWAITING_PAYMENT, ProviderStatus.FAILED, ProviderStatus.ACTION_REQUIRED
        )

    async def refund(
        self,
        payment_id: str,
        amount_minor: int,
        reason: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderRefund:
        """Fatora refunds the whole payment once (its refund takes no amount and no key): a
        repeat after a lost answer finds it refunded through verify."""
        current = await self._post("verify", {"order_id": payment_id})
        payment = payment_from(current)
        if amount_minor != payment.amount_minor:
            raise InvalidRequest("Fatora refunds only the whole payment", code="partial_refund")
        if current.get("refund_status") == "completed":
            return ProviderRefund(
                id=_refund_id(payment_id), state=RefundState.SUCCEEDED, amount_minor=amount_minor
            )
        body = {"order_id": payment_id, "transaction_id": current.get("transaction_id")}
        result = await self._post("refund", body)
        state = (
            RefundState.SUCCEEDED
            if result.get("refund_status") == "completed"
            else RefundState.PENDING
        )
        return ProviderRefund(id=_refund_id(payment_id), state=state, amount_minor=amount_minor)

    # --- checkout -------------------------------------------------------------------------------

    async def create_checkout(
        self, request: CheckoutRequest, idempotency_key: str
    ) -> ProviderCheckout:
        if request.manual_capture:
            raise InvalidRequest(
                "Fatora takes the payment at once; it cannot hold it for a later capture",
                code="manual_capture_not_supported",
            )
        # Fatora hands the buyer back to the merchant, who must then verify (its docs).
        back = request.confirm_url or request.success_url
        body = {
            "amount": _major(request.amount_minor, request.currency),
            "currency": request.currency,
            "order_id": request.client_reference_id,
            "client": {"email": request.email} if request.email else {},
            "language": "en",
            "success_url": back,
            "failure_url": back,
            "note": request.product_name[:200],
        }
        result = await self._post("checkout", body)
        return ProviderCheckout(
            id=request.client_reference_id,
            state=CheckoutState.OPEN,
            paid=False,
            url=str(result.get("checkout_url") or ""),
            expires_at=None,
            amount_minor=request.amount_minor,
            currency=request.currency,
        )

    async def expire_checkout(self, checkout_id: str, idempotency_key: str) -> ProviderCheckout:
        raise InvalidRequest("Fatora checkouts cannot be expired", code="not_supported")

    async def retrieve_checkout(self, checkout_id: str) -> ProviderCheckout:
        payment = await self.retrieve_payment(checkout_id)
        paid = payment.status is ProviderStatus.CAPTURED
        return ProviderCheckout(
            id=checkout_id,
            state=CheckoutState.COMPLETE if paid else CheckoutState.OPEN,
            paid=paid,
            url="",
            expires_at=None,
            payment_id=checkout_id if payment.status is not ProviderStatus.AWAITING_PAYMENT else "",
            amount_minor=payment.amount_minor,
            currency=payment.currency,
        )

    async def verify_return(self, params: Mapping[str, str]) -> CheckoutReturn:
        """Fatora's redirect carries `order_id` (and `transaction_id`), unsigned: it only names
        the order, whose state is then read through verify, as Fatora's docs require."""
        order_id = params.get("order_id", "")
        if not order_id:
            raise SignatureInvalid("no Fatora order id")
        return CheckoutReturn(checkout_id=order_id, reference=params.get("ref", ""))

    # --- webhooks -----------------------------------------------------------------------------

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """`X-Fatora-Signature` = hex HMAC-SHA256(raw body, webhook secret) (Fatora documents
        the notification, not its format: the sandbox's is the assumption), id in
        `X-Fatora-Event-Id`."""
        signature = headers.get("x-fatora-signature", "")
        event_id = headers.get("x-fatora-event-id", "")
        if not self._webhook_secret or not signature or not event_id:
            raise SignatureInvalid("missing signature, event id or webhook secret")
        expected = hmac.new(self._webhook_secret.encode(), payload, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise SignatureInvalid("Fatora webhook signature mismatch")
        try:
            body = loads_json(payload)  # depth-limited: still untrusted
            result = body.get("result") or {}
            order_id = str(result["order_id"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SignatureInvalid("signed body is not a Fatora event") from None
        kind = str(body.get("event") or "")
        return ProviderEvent(
            id=event_id,
            type=kind,
            created=datetime.now(UTC),
            subject=EventSubject.CHECKOUT if kind.startswith("payment.") else EventSubject.OTHER,
            object_id=order_id,
            payment_id=order_id,
            body=body,  # stored as the event's payload: parsed once (issue 13)
        )
