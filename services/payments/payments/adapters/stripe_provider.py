"""The Stripe adapter: the PaymentProvider port over the official `stripe` SDK (async requests).

Stripe's vocabulary stops here: PaymentIntent and Checkout Session statuses, refund reasons and
event object types are mapped to the domain's provider types, and SDK errors to Declined /
InvalidRequest / OutcomeUnknown. Every call has a
deadline (PROVIDER_TIMEOUT_SECONDS) and no SDK-level retries: retries are ours, with the same
idempotency key, so a retry can never charge twice.

Calls go through the SDK's `raw_request_async` (its documented way to call any endpoint: the same
authentication, form encoding, idempotency and account headers, and the same typed errors), and
the answer is read as the JSON the SDK parsed once. The typed services would then build a
StripeObject tree of the answer (`_convert_to_stripe_object`, `_refresh_from`) only for this
adapter to turn it back into plain data (`to_dict`), on every call (issue 13).
"""

from __future__ import annotations

import asyncio
import enum
import re
import ssl
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote_plus

import httpx
import stripe
from stripe import WebhookSignature  # a lazy attribute of the package: resolved once, here

from hirepay_platform.untrusted import loads_json
from payments.adapters.http_pool import HTTPPool
from payments.adapters.stripe_disputes import DISPUTE_EVENT_TYPES, dispute_from
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
    PayoutAccountRequest,
    PayoutStatus,
    ProviderCheckout,
    ProviderErrorInfo,
    ProviderEvent,
    ProviderPayment,
    ProviderPayout,
    ProviderPayoutAccount,
    ProviderRefund,
    ProviderStatus,
    ProviderTransfer,
    RefundState,
    SignatureInvalid,
)

T = TypeVar("T")
WEBHOOK_TOLERANCE_SECONDS = 300


class IntentStatus(enum.StrEnum):
    """Where a Stripe PaymentIntent stands (Stripe's words)."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    CANCELED = "canceled"
    SUCCEEDED = "succeeded"


class CheckoutStatus(enum.StrEnum):
    """Where a Stripe Checkout Session stands."""

    OPEN = "open"
    COMPLETE = "complete"
    EXPIRED = "expired"


# Stripe's statuses in the domain's words (requires_payment_method: FAILED when Stripe says why).
_STATUS: dict[IntentStatus, ProviderStatus] = {
    IntentStatus.REQUIRES_PAYMENT_METHOD: ProviderStatus.AWAITING_PAYMENT,
    IntentStatus.REQUIRES_CONFIRMATION: ProviderStatus.ACTION_REQUIRED,
    IntentStatus.REQUIRES_ACTION: ProviderStatus.ACTION_REQUIRED,
    IntentStatus.PROCESSING: ProviderStatus.PROCESSING,
    IntentStatus.REQUIRES_CAPTURE: ProviderStatus.AUTHORIZED,
    IntentStatus.CANCELED: ProviderStatus.CANCELED,
    IntentStatus.SUCCEEDED: ProviderStatus.CAPTURED,
}
# The same by Stripe's string: a dict look-up per answer and event, not the enum's call (three
# Python calls: EnumType.__call__, Enum.__new__; issue 13).
_STATUS_OF: dict[str, ProviderStatus] = {status.value: mapped for status, mapped in _STATUS.items()}
_CHECKOUT_STATE: dict[CheckoutStatus, CheckoutState] = {
    CheckoutStatus.OPEN: CheckoutState.OPEN,
    CheckoutStatus.COMPLETE: CheckoutState.COMPLETE,
    CheckoutStatus.EXPIRED: CheckoutState.EXPIRED,
}
# The refund reasons Stripe accepts; any other domain reason is sent as metadata only.
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
# Stripe event objects and what they are about in the domain.
_SUBJECTS = {
    "payment_intent": EventSubject.PAYMENT,
    "checkout.session": EventSubject.CHECKOUT,
    "dispute": EventSubject.DISPUTE,
    "payout": EventSubject.PAYOUT,
}
# The event types a webhook endpoint must enable (README "Running against real Stripe"; the dev
# stack's sandbox sends exactly these): every change of a payment, checkout or payout that Hirepay
# acts on has an event here. Not payment_intent.created: the request that created the intent has
# its answer, and every state the create can end in (requires_capture, succeeded, processing,
# requires_action, payment_failed) comes with its own event below, so a lost answer is still
# settled by a webhook; without it a card posting costs two deliveries, not three (issue 13).
WEBHOOK_EVENT_TYPES = (
    "payment_intent.amount_capturable_updated",
    "payment_intent.canceled",
    "payment_intent.payment_failed",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.succeeded",
    "checkout.session.completed",
    "checkout.session.expired",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    *DISPUTE_EVENT_TYPES,
    "payout.created",
    "payout.updated",
    "payout.paid",
    "payout.failed",
    "payout.canceled",
    "charge.refunded",  # refunds: see REFUND_EVENT_TYPES
    "refund.updated",
)
# Refunds, whoever made them (Hirepay, the Dashboard, Stripe itself): `charge.refunded` comes
# with every refund of a charge, full or partial, on every API version; `refund.updated` with
# every later change of one (pending -> succeeded, failed or canceled; for charge refunds since
# 2024-10-28.acacia, before this SDK's pinned version). `refund.created` would repeat
# `charge.refunded` and `refund.failed` / `charge.refund.updated` repeat `refund.updated`: not
# enabled, but applied the same way when an endpoint sends them (each re-fetches every refund of
# the payment, so any one of them brings the payment up to date).
REFUND_EVENT_TYPES = frozenset(
    {
        "charge.refunded",
        "charge.refund.updated",
        "refund.created",
        "refund.updated",
        "refund.failed",
    }
)
_PAYOUT_STATUS = {status.value: status for status in PayoutStatus}


# The characters quote_plus never escapes (urllib's always-safe set): an id made only of them
# (every Stripe id) is its own path segment, with no quoting to run (issue 13: quote_plus,
# quote, quote_from_bytes and their helpers were 12 calls per capture).
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]+").fullmatch


def _path_id(value: str) -> str:
    """An id as a path segment (as the SDK's services quote it)."""
    return value if _UNQUOTED(value) else quote_plus(value)


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def _id(value: Any) -> str:
    """An expandable field: either an id or an object with an id."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _event_view(obj: Mapping[str, Any]) -> ProviderPayment | None:
    """The PaymentIntent as an event carries it (None for other objects or an unreadable one)."""
    if obj.get("object") != "payment_intent":
        return None
    try:
        return intent_from(obj)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def intent_from(data: Mapping[str, Any]) -> ProviderPayment:
    error = data.get("last_payment_error") or None
    next_action = data.get("next_action") or {}
    url = ""
    if next_action:
        redirect = next_action.get("redirect_to_url") or {}
        url = redirect.get("url") or next_action.get("url") or ""
        if not url:
            sdk = next_action.get("use_stripe_sdk") or {}
            url = sdk.get("stripe_js") or sdk.get("url") or ""
    try:
        status = _STATUS_OF[data["status"]]
    except (KeyError, TypeError):  # none, or not one of Stripe's: the enum's own error
        status = _STATUS[IntentStatus(data["status"])]
    if status is ProviderStatus.AWAITING_PAYMENT and error:
        status = ProviderStatus.FAILED
    return ProviderPayment(
        id=str(data["id"]),
        status=status,
        amount_minor=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").upper(),
        amount_capturable=int(data.get("amount_capturable") or 0),
        amount_received=int(data.get("amount_received") or 0),
        customer_id=_id(data.get("customer")),
        next_action_url=str(url),
        last_error=(
            ProviderErrorInfo(
                code=str(error.get("code") or ""),
                decline_code=str(error.get("decline_code") or ""),
                message=str(error.get("message") or ""),
                param=str(error.get("param") or ""),
            )
            if error
            else None
        ),
        metadata=_str_map(data.get("metadata")),
        cancellation_reason=str(data.get("cancellation_reason") or ""),
    )


def checkout_from(data: Mapping[str, Any]) -> ProviderCheckout:
    return ProviderCheckout(
        id=str(data["id"]),
        state=_CHECKOUT_STATE[CheckoutStatus(data.get("status") or "open")],
        paid=data.get("payment_status") == "paid",
        url=str(data.get("url") or ""),
        expires_at=_ts(data.get("expires_at")),
        payment_id=_id(data.get("payment_intent")),
        customer_id=_id(data.get("customer")),
        amount_minor=int(data.get("amount_total") or 0),
        currency=str(data.get("currency") or "").upper(),
        metadata=_str_map(data.get("metadata")),
    )


def payout_from(data: Mapping[str, Any]) -> ProviderPayout:
    return ProviderPayout(
        id=str(data["id"]),
        status=_PAYOUT_STATUS.get(str(data.get("status") or ""), PayoutStatus.PENDING),
        amount_minor=int(data.get("amount") or 0),
        failure_code=str(data.get("failure_code") or ""),
        failure_message=str(data.get("failure_message") or ""),
        metadata=_str_map(data.get("metadata")),
    )


def transfer_from(data: Mapping[str, Any]) -> ProviderTransfer:
    return ProviderTransfer(
        id=str(data["id"]),
        amount_minor=int(data.get("amount") or 0),
        amount_reversed=int(data.get("amount_reversed") or 0),
    )


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def map_error(exc: BaseException) -> BaseException:
    """The domain failure for an SDK (or transport) exception."""
    if isinstance(exc, stripe.CardError):
        err = _error_body(exc)
        info = ProviderErrorInfo(
            code=str(err.get("code") or exc.code or "card_declined"),
            decline_code=str(err.get("decline_code") or ""),
            message=str(err.get("message") or exc.user_message or "Your card was declined."),
            param=str(err.get("param") or ""),
        )
        return Declined(info, payment_id=_id(err.get("payment_intent")))
    if isinstance(exc, stripe.IdempotencyError):
        return InvalidRequest(str(exc.user_message or exc), code="idempotency_error", status=400)
    if isinstance(exc, stripe.InvalidRequestError):
        err = _error_body(exc)
        return InvalidRequest(
            str(err.get("message") or exc.user_message or exc),
            code=str(err.get("code") or exc.code or ""),
            param=str(err.get("param") or exc.param or ""),
            status=int(exc.http_status or 400),
        )
    if isinstance(exc, stripe.APIConnectionError):
        timeout = isinstance(exc.__cause__, httpx.TimeoutException)
        return OutcomeUnknown(
            "provider timed out" if timeout else "provider unreachable", timeout=timeout
        )
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return OutcomeUnknown("provider timed out", timeout=True)
    if isinstance(exc, stripe.StripeError):
        # 5xx, 409 (a concurrent request with the same key), 429, auth problems: no usable answer.
        return OutcomeUnknown(f"provider error (HTTP {exc.http_status})", timeout=False)
    if isinstance(exc, httpx.TimeoutException):
        return OutcomeUnknown("provider timed out", timeout=True)
    if isinstance(exc, httpx.HTTPError | OSError):
        return OutcomeUnknown("provider unreachable", timeout=False)
    return exc


# A payment is refunded a handful of times at most; pages of 100 bound a runaway list.
MAX_REFUND_PAGES = 10


def _event_subject(event_type: str, obj: Mapping[str, Any]) -> EventSubject:
    """What an event is about: refund events by their type (`charge.refunded` carries the
    charge), the others by their object."""
    if event_type in REFUND_EVENT_TYPES:
        return EventSubject.REFUND
    return _SUBJECTS.get(str(obj.get("object") or ""), EventSubject.OTHER)


def refund_from(data: Mapping[str, Any], amount_minor: int = 0) -> ProviderRefund:
    """A Stripe refund in the domain's words."""
    status = str(data.get("status") or "succeeded")
    return ProviderRefund(
        id=str(data["id"]),
        state=(
            RefundState.FAILED
            if status in ("failed", "canceled")
            else RefundState.PENDING
            if status in ("pending", "requires_action")
            else RefundState.SUCCEEDED
        ),
        amount_minor=int(data.get("amount") or amount_minor),
        reason=str(data.get("reason") or ""),
        metadata=_str_map(data.get("metadata")),
        failure_reason=str(data.get("failure_reason") or ""),
    )


class PooledHTTPXClient(stripe.HTTPXClient):
    """The SDK's httpx client over our transport (http_pool.HTTPPool).

    The SDK builds its `httpx.AsyncClient` with httpx's default limits (at most 100 connections,
    20 kept alive) and takes no limits of its own: calls beyond 100 in flight would queue in the
    client (a slow Stripe then caps the payments in flight at 100) and every burst above 20 would
    reopen connections. Same TLS verification as the SDK's (its CA bundle).

    A request goes straight to the pool (issue 13): the SDK hands over a finished request (URL,
    every header, the encoded body) and reads back the status, headers and body, so neither the
    client's layers (URL and header merging, cookie jar, auth and redirect loops) nor httpx's
    request and response models did anything for it. With a proxy configured (the environment's
    or `stripe.proxy`) the request goes through the client as before, which applies it."""

    def __init__(self, *, timeout: float, max_connections: int) -> None:
        super().__init__(timeout=timeout)
        if not isinstance(getattr(self, "_client_async", None), httpx.AsyncClient):
            # Fail at start-up, not under load, should an SDK upgrade rename its client.
            raise RuntimeError("stripe.HTTPXClient no longer keeps its httpx.AsyncClient")
        self._pool = HTTPPool(
            max_connections=max_connections,
            verify=ssl.create_default_context(cafile=stripe.ca_bundle_path),
        )
        self._client_async = httpx.AsyncClient(transport=self._pool)
        # What the client would send as the request's `timeout` extension (the SDK's timeout).
        self._timeouts = httpx.Timeout(timeout).as_dict()
        self._direct = not self._proxy and not urllib.request.getproxies()

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        if not self._direct:
            return await super().request_async(method, url, headers, post_data)
        try:
            answer = await self._pool.request(method, url, headers, post_data, self._timeouts)
        except Exception as exc:
            # The SDK's own mapping: APIConnectionError, the transport error as its cause.
            self._handle_request_error(exc)
        found = answer.headers
        if found.get("content-encoding", "identity") != "identity":
            # Not asked for (no Accept-Encoding is sent), but decoded as httpx would.
            response = httpx.Response(
                answer.status, headers=list(found.items()), stream=httpx.ByteStream(answer.body)
            )
            return await response.aread(), answer.status, found
        return answer.body, answer.status, found


class StripeProvider:
    """PaymentProvider backed by Stripe (or the Stripe-compatible sandbox)."""

    name = "stripe"
    refunds_by_event = True  # charge.refunded, refund.updated

    def accepts_payment_method(self, token: str) -> bool:
        """Stripe PaymentMethod ids (`pm_...`); the SDK refuses unknown ones itself."""
        return token.startswith("pm_") and len(token) <= 255

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str = "",
        webhook_secrets: list[str] | None = None,
        timeout: float = 8.0,
        max_connections: int = 256,
        telemetry: bool = False,
    ) -> None:
        """`max_connections`: calls to Stripe that may be in flight at once (see
        PooledHTTPXClient). `telemetry`: the SDK's request telemetry (`stripe.enable_telemetry`,
        its documented switch, process-wide: the SDK reads only the module's flag)."""
        # Off by default (issue 13): with it on, every request reads the SDK's telemetry id (its
        # first one writes ~/.config/stripe/telemetry_id), asks `platform` for the OS and sends
        # the previous request's id and duration as a second JSON header, built and recorded per
        # request: ~15 Python calls per request, two requests per posting. Stripe's API answers
        # the same without it.
        stripe.enable_telemetry = telemetry
        self._timeout = timeout
        self._webhook_secrets = list(webhook_secrets or [])
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            http_client=PooledHTTPXClient(timeout=timeout, max_connections=max_connections),
            max_network_retries=0,
        )

    async def _run(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str = "",
        account: str = "",
    ) -> dict[str, Any]:
        """One API call (`path` under /v1): the answer's JSON, or the domain's failure."""
        options: dict[str, Any] = {}
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        if account:
            options["stripe_account"] = account
        try:
            # The deadline in the caller's own task: wait_for ran every call in a task of its
            # own (a task, its scheduling and a loop turn per call, for nothing: issue 13).
            async with asyncio.timeout(self._timeout):
                response = await self.client.raw_request_async(
                    method, path, **(params or {}), **options
                )
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            mapped = map_error(exc)
            if mapped is exc:
                raise
            raise mapped from None
        data = response.data
        if not isinstance(data, dict):
            raise OutcomeUnknown("provider answered no JSON object", timeout=False)
        return data

    # --- payments ---------------------------------------------------------------------------

    async def create_customer(self, email: str, idempotency_key: str) -> str:
        data = await self._run(
            "post", "/v1/customers", {"email": email}, idempotency_key=idempotency_key
        )
        return str(data["id"])

    async def authorize(self, request: AuthorizeRequest, idempotency_key: str) -> ProviderPayment:
        params: dict[str, Any] = {
            "amount": request.amount_minor,
            "currency": request.currency.lower(),
            "payment_method": request.payment_method,
            "confirm": True,
            "capture_method": "manual" if request.manual_capture else "automatic",
            "metadata": dict(request.metadata),
        }
        if request.manual_capture:
            params["payment_method_types"] = ["card"]
        else:
            params["payment_method_types"] = ["us_bank_account"]
            # Stripe requires the debit mandate's acceptance when confirming a bank debit.
            params["mandate_data"] = {"customer_acceptance": {"type": "offline"}}
        if request.description:
            params["description"] = request.description
        if request.return_url:
            params["return_url"] = request.return_url
        if request.email:
            params["receipt_email"] = request.email
        data = await self._run(
            "post", "/v1/payment_intents", params, idempotency_key=idempotency_key
        )
        return intent_from(data)

    async def capture(
        self, intent_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPayment:
        params: dict[str, Any] = {"amount_to_capture": amount_minor} if amount_minor else {}
        data = await self._run(
            "post",
            f"/v1/payment_intents/{_path_id(intent_id)}/capture",
            params,
            idempotency_key=idempotency_key,
        )
        return intent_from(data)

    async def cancel(self, intent_id: str, idempotency_key: str) -> ProviderPayment:
        data = await self._run(
            "post",
            f"/v1/payment_intents/{_path_id(intent_id)}/cancel",
            idempotency_key=idempotency_key,
        )
        return intent_from(data)

    async def refund(
        self,
        intent_id: str,
        amount_minor: int,
        reason: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderRefund:
        params: dict[str, Any] = {
            "payment_intent": intent_id,
            "amount": amount_minor,
            "metadata": dict(metadata),
        }
        if reason in REFUND_REASONS:
            params["reason"] = reason
        data = await self._run("post", "/v1/refunds", params, idempotency_key=idempotency_key)
        return refund_from(data, amount_minor)

    async def retrieve_payment(self, intent_id: str) -> ProviderPayment:
        data = await self._run("get", f"/v1/payment_intents/{_path_id(intent_id)}")
        return intent_from(data)

    async def list_refunds(self, intent_id: str) -> list[ProviderRefund]:
        """The intent's refunds (`GET /v1/refunds?payment_intent=`), every page."""
        found: list[ProviderRefund] = []
        params: dict[str, Any] = {"payment_intent": intent_id, "limit": 100}
        for _ in range(MAX_REFUND_PAGES):
            page = await self._run("get", "/v1/refunds", params)
            items = list(page.get("data") or [])
            found += [refund_from(item) for item in items]
            if not page.get("has_more") or not items:
                return found
            params["starting_after"] = str(items[-1]["id"])
        raise OutcomeUnknown("too many refunds to list", timeout=False)

    # --- hosted checkout ----------------------------------------------------------------------

    async def create_checkout(
        self, request: CheckoutRequest, idempotency_key: str
    ) -> ProviderCheckout:
        intent_data: dict[str, Any] = {"metadata": dict(request.metadata)}
        if request.manual_capture:
            intent_data["capture_method"] = "manual"
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount_minor,
                        "product_data": {"name": request.product_name},
                    },
                }
            ],
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "client_reference_id": request.client_reference_id,
            "metadata": dict(request.metadata),
            "payment_intent_data": intent_data,
        }
        if request.customer_id:
            params["customer"] = request.customer_id
        elif request.email:
            params["customer_email"] = request.email
        if request.expires_at is not None:
            params["expires_at"] = int(request.expires_at.timestamp())
        data = await self._run(
            "post", "/v1/checkout/sessions", params, idempotency_key=idempotency_key
        )
        return checkout_from(data)

    async def expire_checkout(self, session_id: str, idempotency_key: str) -> ProviderCheckout:
        data = await self._run(
            "post",
            f"/v1/checkout/sessions/{_path_id(session_id)}/expire",
            idempotency_key=idempotency_key,
        )
        return checkout_from(data)

    async def retrieve_checkout(self, session_id: str) -> ProviderCheckout:
        data = await self._run("get", f"/v1/checkout/sessions/{_path_id(session_id)}")
        return checkout_from(data)

    # --- Connect payouts (ESC-9) -------------------------------------------------------------

    async def create_payout_account(
        self, request: PayoutAccountRequest, idempotency_key: str
    ) -> ProviderPayoutAccount:
        params: dict[str, Any] = {
            "type": "express",
            "country": request.country,
            # Stripe's own Express accounts in the platform's country take both capabilities.
            "capabilities": {
                "card_payments": {"requested": True},
                "transfers": {"requested": True},
            },
            # Payouts are made by the platform, one per withdrawal (Stripe refuses manual payouts
            # on an automatic schedule).
            "settings": {"payouts": {"schedule": {"interval": "manual"}}},
            "metadata": {"hirepay_user_id": request.user_id},
        }
        if request.email:
            params["email"] = request.email
        data = await self._run("post", "/v1/accounts", params, idempotency_key=idempotency_key)
        return ProviderPayoutAccount(str(data["id"]), bool(data.get("payouts_enabled")))

    async def onboarding_link(self, account_id: str, request: PayoutAccountRequest) -> str:
        # Account links are single-use and short-lived: a fresh one each time, no key needed.
        data = await self._run(
            "post",
            "/v1/account_links",
            {
                "account": account_id,
                "type": "account_onboarding",
                "return_url": request.return_url,
                "refresh_url": request.refresh_url,
            },
        )
        return str(data.get("url") or "")

    async def retrieve_payout_account(self, account_id: str) -> ProviderPayoutAccount:
        data = await self._run("get", f"/v1/accounts/{_path_id(account_id)}")
        return ProviderPayoutAccount(str(data["id"]), bool(data.get("payouts_enabled")))

    async def transfer(
        self,
        account_id: str,
        amount_minor: int,
        currency: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderTransfer:
        data = await self._run(
            "post",
            "/v1/transfers",
            {
                "amount": amount_minor,
                "currency": currency.lower(),
                "destination": account_id,
                "metadata": dict(metadata),
            },
            idempotency_key=idempotency_key,
        )
        return transfer_from(data)

    async def reverse_transfer(
        self, transfer_id: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> ProviderTransfer:
        await self._run(
            "post",
            f"/v1/transfers/{_path_id(transfer_id)}/reversals",
            {"metadata": dict(metadata)},
            idempotency_key=idempotency_key,
        )
        data = await self._run("get", f"/v1/transfers/{_path_id(transfer_id)}")
        return transfer_from(data)

    async def payout(
        self,
        account_id: str,
        amount_minor: int,
        currency: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderPayout:
        data = await self._run(
            "post",
            "/v1/payouts",
            {"amount": amount_minor, "currency": currency.lower(), "metadata": dict(metadata)},
            idempotency_key=idempotency_key,
            account=account_id,
        )
        return payout_from(data)

    async def retrieve_payout(self, account_id: str, payout_id: str) -> ProviderPayout:
        data = await self._run("get", f"/v1/payouts/{_path_id(payout_id)}", account=account_id)
        return payout_from(data)

    # --- disputes (charge.dispute.*) ---------------------------------------------------------

    async def retrieve_dispute(self, dispute_id: str) -> ProviderDispute:
        """The dispute with its balance transactions (always embedded whole by Stripe)."""
        data = await self._run("get", f"/v1/disputes/{_path_id(dispute_id)}")
        return dispute_from(data)

    # --- webhooks -----------------------------------------------------------------------------

    async def verify_return(self, params: Mapping[str, str]) -> CheckoutReturn:
        """Stripe's success URL carries the session id (`{CHECKOUT_SESSION_ID}`); nothing is
        signed, so the session is trusted only as re-fetched from Stripe."""
        session_id = params.get("session_id", "")
        if not session_id.startswith("cs_"):
            raise SignatureInvalid("no checkout session id")
        return CheckoutReturn(checkout_id=session_id)

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        return self.construct_event(payload, headers.get("stripe-signature", ""))

    def construct_event(self, payload: bytes, signature: str) -> ProviderEvent:
        """Verify the Stripe-Signature over the raw bytes with any configured secret (rotation),
        within the 300 s tolerance; only then parse the body."""
        if not self._webhook_secrets:
            raise SignatureInvalid("no webhook secret is configured")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureInvalid("body is not UTF-8") from None
        last: Exception | None = None
        for secret in self._webhook_secrets:
            try:
                # (`stripe.WebhookSignature` would go through the package's __getattr__ and
                # import_module on every delivery: 11 Python calls per webhook, issue 13)
                WebhookSignature.verify_header(text, signature, secret, WEBHOOK_TOLERANCE_SECONDS)
                break
            except stripe.SignatureVerificationError as exc:
                last = exc
        else:
            reason = str(getattr(last, "user_message", "") or last or "signature mismatch")
            raise SignatureInvalid(reason.split(".")[0])
        try:
            body = loads_json(text)  # depth-limited: a signed body is still untrusted
            obj = body["data"]["object"]
            return ProviderEvent(
                id=str(body["id"]),
                type=str(body["type"]),
                created=_ts(body.get("created")) or datetime.now(UTC),
                subject=_event_subject(str(body["type"]), obj),
                object_id=str(obj.get("id") or ""),
                metadata=_str_map(obj.get("metadata")),
                payment_id=_id(obj.get("payment_intent")),
                account=str(body.get("account") or ""),
                view=_event_view(obj),
                body=body,
                body_text=text,  # verified, and parsed whole into `body`
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SignatureInvalid("signed body is not a Stripe event") from None
