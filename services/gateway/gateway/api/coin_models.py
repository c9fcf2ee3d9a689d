"""HTTP models of coins (ESC-3): buying coins through a provider checkout."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from gateway.api.models import CurrencyCode, Email, RedirectUrl, Strict
from hirepay_platform.money import MAX_AMOUNT_MINOR


class CoinPurchaseIn(Strict):
    """`POST /api/coins/purchase`: what the buyer pays, in the currency's minor units (e.g.
    `1000` USD = $10.00); the coins it buys follow from the configured rate (PAYMENTS_COIN_RATES,
    default 100 coins per dollar) and must be whole."""

    amountMinor: Annotated[int, Field(gt=0, le=MAX_AMOUNT_MINOR, strict=True)]
    currency: CurrencyCode = "USD"
    # The provider's checkout; absent: the payments service's default (PAYMENTS_DEFAULT_PROVIDER).
    provider: Literal["STRIPE", "FATORA"] | None = None
    email: Email | None = None
    returnUrl: RedirectUrl
    cancelUrl: RedirectUrl


class CoinPurchaseOut(BaseModel):
    """The open checkout: pay at `checkoutUrl`; the coins reach the buyer's COIN wallet once the
    provider confirms the payment (its webhook, the return, or the payments service's poll)."""

    paymentId: str
    status: str
    coins: int
    amountMinor: int
    currency: str
    provider: str
    checkoutUrl: str | None
