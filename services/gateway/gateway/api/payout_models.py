"""HTTP models of payout accounts and withdrawals (ESC-9, `/api/wallet/...`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gateway.api.models import MoneyIn, MoneyOut, Strict


class PayoutAccountIn(Strict):
    """`POST /api/wallet/payout-account`: optional details prefilled at the provider."""

    email: str | None = Field(default=None, min_length=3, max_length=254)
    country: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")


class PayoutAccountOut(BaseModel):
    """The contractor's account at the payout provider (a Stripe Connect account)."""

    provider: str
    providerAccountId: str
    status: Literal["onboarding", "active"]
    onboardingUrl: str | None  # while onboarding: finish it there (single-use, short-lived)
    createdAt: str | None
    updatedAt: str | None


class WithdrawalIn(Strict):
    """`POST /api/wallet/withdrawals`: the amount in the currency's minor unit (> 0)."""

    amount: MoneyIn


class WithdrawalOut(BaseModel):
    """A withdrawal: requested -> sending -> in_transit -> paid | failed (money back); a paid
    one is `returned` (money back) when the bank sends it back afterwards."""

    id: str
    status: Literal["requested", "sending", "in_transit", "paid", "failed", "returned"]
    amount: MoneyOut | None
    provider: str
    transferId: str | None
    payoutId: str | None
    failureCode: str | None
    failureMessage: str | None
    createdAt: str | None
    updatedAt: str | None


class WithdrawalsOut(BaseModel):
    withdrawals: list[WithdrawalOut]
    next_page_token: str | None
