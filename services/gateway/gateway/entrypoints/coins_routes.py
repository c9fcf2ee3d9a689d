"""Coins over HTTP (ESC-3): buying coins through a provider's hosted checkout (Stripe or Fatora).
The provider's webhooks and returns arrive at `/api/payments/webhook/{provider}` and
`/api/payments/return/{provider}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from gateway.api import coin_models as m
from gateway.api.errors import error_responses
from gateway.entrypoints.deps import AnyUser, BackendsDep, check_redirects
from gateway.service_layer.idempotency import optional_key, scoped_request_id
from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_platform.ids import new_id

router = APIRouter(prefix="/api/coins", tags=["coins"])


@router.post(
    "/purchase",
    response_model=m.CoinPurchaseOut,
    summary="Buy coins through a provider checkout (ESC-3)",
    responses=error_responses(400, 401, 403, 409, 422, 502, 503, 504),
)
async def purchase_coins(
    request: Request,
    body: m.CoinPurchaseIn,
    principal: AnyUser,
    backends: BackendsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> m.CoinPurchaseOut:
    """Opens a checkout for the caller's own coins; pay at `checkoutUrl`. On the provider's
    success the coins are issued to the caller's COIN wallet once, whatever the retries and
    duplicate webhooks; a failed or abandoned payment issues nothing. An optional
    `Idempotency-Key` makes retries answer the same checkout (another body with it: 422)."""
    check_redirects(request, {"returnUrl": body.returnUrl, "cancelUrl": body.cancelUrl})
    key = optional_key(idempotency_key)
    request_id = scoped_request_id(principal.user_id, "coins", key) if key else new_id("coins")
    reply = await backends.payments.purchase_coins(
        pay_pb.PurchaseCoinsRequest(
            request_id=request_id,
            buyer_id=principal.user_id,
            amount=common_pb2.Money(amount_minor=body.amountMinor, currency=body.currency.upper()),
            provider=(body.provider or "").lower(),
            email=body.email or "",
            return_url=body.returnUrl,
            cancel_url=body.cancelUrl,
        )
    )
    payment = reply.payment
    return m.CoinPurchaseOut(
        paymentId=payment.payment_id,
        status=pay_pb.Payment.State.Name(payment.state),
        coins=reply.coins,
        amountMinor=payment.amount.amount_minor,
        currency=payment.amount.currency,
        provider=payment.provider,
        checkoutUrl=reply.checkout_url or None,
    )
