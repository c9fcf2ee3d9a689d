"""The posting price list (PAY-10), the terms rule (PAY-3) and the cancellation refund policy (PAY-13)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from hirepay_platform.errors import ValidationError
from hirepay_platform.money import Money
from jobs.domain.errors import FeeMismatch, TermsNotAccepted, TermsOutdated

CREDITS_UNIT = "JOB_CREDIT"
DEFAULT_KEY = "default"


@dataclass(frozen=True, slots=True)
class PriceList:
    """Posting fees per category and currency, in minor units; `default` covers other categories."""

    fees: Mapping[str, Mapping[str, int]]
    categories: frozenset[str]
    default_currency: str = "USD"
    credits_fee: int = 500

    def fee(self, category: str, currency: str = "") -> Money:
        """The fee for a category in a currency (the list's default currency when empty)."""
        unit = (currency or self.default_currency).upper()
        prices = self.fees.get(category) or self.fees.get(DEFAULT_KEY) or {}
        if unit not in prices:
            raise ValidationError(
                f"posting fees are not offered in {unit}",
                fields={"payment.expected_amount.currency": f"not offered for {category}"},
            )
        return Money(int(prices[unit]), unit)

    def fee_for_method(self, category: str, method: str, currency: str = "") -> Money:
        """What a posting costs paid with `method`: job credits for credits, else money."""
        if method == "credits":
            return Money(self.credits_fee, CREDITS_UNIT)
        return self.fee(category, currency)


def check_expected_amount(fee: Money, expected: Money | None) -> None:
    """A client-sent amount is validated against the fee, never trusted (PAY-10)."""
    if expected is None or (expected.amount_minor == 0 and not expected.currency):
        return
    if expected.amount_minor != fee.amount_minor or (
        expected.currency and expected.currency.upper() != fee.currency
    ):
        raise FeeMismatch(
            "the expected amount does not match the posting fee",
            metadata={
                "expected_amount_minor": str(expected.amount_minor),
                "expected_currency": expected.currency,
                "fee_amount_minor": str(fee.amount_minor),
                "fee_currency": fee.currency,
            },
        )


def check_terms(accepted: bool, version: str, current: str) -> None:
    """Posting requires accepting the current terms; a stated version must be the current one."""
    if not accepted:
        raise TermsNotAccepted(
            "the posting terms must be accepted", metadata={"terms_version": current}
        )
    if version and version != current:
        raise TermsOutdated(
            f"terms version {version} is not current",
            metadata={"terms_version": current, "accepted_version": version},
        )


@dataclass(frozen=True, slots=True)
class RefundPolicy:
    """Refund on cancellation: `full_refund_within_hours` of posting returns everything, else
    `late_refund_percent` (0 by default) of the amount paid, rounded down to the minor unit."""

    full_refund_within_hours: float = 24.0
    late_refund_percent: int = 0

    def refund_amount(self, paid_minor: int, posted_at: datetime | None, now: datetime) -> int:
        """How much of `paid_minor` to return when a posting is cancelled at `now`."""
        if paid_minor <= 0:
            return 0
        if posted_at is None or now - posted_at <= timedelta(hours=self.full_refund_within_hours):
            return paid_minor
        return paid_minor * max(0, min(100, self.late_refund_percent)) // 100
