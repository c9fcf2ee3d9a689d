"""PayPal's disputes in the domain's words: the dispute webhook events (`CUSTOMER.DISPUTE.*`) and
a dispute (`GET /v1/customer/disputes/{id}`) read as a ProviderDispute.

PayPal has no balance transactions: it holds the disputed amount from the seller's balance when
the dispute opens and releases it when the seller wins (or the buyer cancels, or PayPal pays the
buyer itself); a dispute the buyer wins keeps it taken (less any part PayPal released). Those
movements are read as the domain's money under ids of their own, derived from the dispute
(`<dispute>:held`, `<dispute>:released`), so each is booked once whatever the event that
re-fetched it. The dispute's fees (`money_movements` debited from the seller for a dispute or
chargeback fee) are money of their own too (`<dispute>:fee:<reason>`)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from hirepay_platform import money
from payments.domain.disputes import DisputeMoney, DisputeStatus, ProviderDispute

# Every change of a dispute PayPal reports: opened, updated (a message, a stage, evidence),
# resolved. Each is applied from the dispute re-fetched, so any of them settles it.
DISPUTE_EVENT_TYPES = frozenset(
    {"CUSTOMER.DISPUTE.CREATED", "CUSTOMER.DISPUTE.UPDATED", "CUSTOMER.DISPUTE.RESOLVED"}
)
# Outcomes that leave the disputed money with the buyer (the seller lost, or accepted the claim).
_BUYER_KEEPS = frozenset({"RESOLVED_BUYER_FAVOUR", "ACCEPTED"})
# An open dispute's status while the seller has to answer, or PayPal is deciding.
_UNDER_REVIEW = frozenset({"UNDER_REVIEW", "WAITING_FOR_BUYER_RESPONSE"})
# The money movements that are a fee PayPal charged the seller for the dispute.
_FEES = frozenset({"DISPUTE_FEE", "CHARGEBACK_FEE", "DISPUTE_SETTLEMENT_FEE"})


def _minor(amount: Mapping[str, Any] | None) -> tuple[int, str]:
    """An amount object ({currency_code, value}) in minor units, and its currency."""
    if not isinstance(amount, Mapping):
        return 0, ""
    currency = str(amount.get("currency_code") or "").upper()
    if not currency:
        return 0, ""
    value = Decimal(str(amount.get("value") or "0"))
    return int(value.scaleb(money.exponent(currency))), currency


def capture_of(data: Mapping[str, Any]) -> str:
    """The capture the dispute is about (the first disputed transaction's id as the seller
    sees it): PayPal's capture id, whose order is the domain's payment."""
    for tx in data.get("disputed_transactions") or []:
        if isinstance(tx, Mapping) and tx.get("seller_transaction_id"):
            return str(tx["seller_transaction_id"])
    return ""


def _status(data: Mapping[str, Any], outcome: str) -> DisputeStatus:
    """PayPal's status, stage and outcome as the domain's status: an inquiry (no chargeback
    yet) reads as a warning; an unknown status as one the seller must answer (never closed by a
    word Hirepay does not know)."""
    inquiry = str(data.get("dispute_life_cycle_stage") or "") == "INQUIRY"
    status = str(data.get("status") or "")
    if status == "RESOLVED":
        if outcome in _BUYER_KEEPS:
            return DisputeStatus.LOST
        return DisputeStatus.WARNING_CLOSED if inquiry else DisputeStatus.WON
    if status in _UNDER_REVIEW:
        return DisputeStatus.WARNING_UNDER_REVIEW if inquiry else DisputeStatus.UNDER_REVIEW
    return DisputeStatus.WARNING_NEEDS_RESPONSE if inquiry else DisputeStatus.NEEDS_RESPONSE


def _money(
    dispute_id: str, data: Mapping[str, Any], amount: int, currency: str, outcome: str
) -> tuple[DisputeMoney, ...]:
    """The hold when it opened, its release when the buyer did not keep it all, the fees."""
    if amount <= 0:
        return ()
    found = [DisputeMoney(f"{dispute_id}:held", -amount, 0, currency)]
    if str(data.get("status") or "") == "RESOLVED":
        kept = amount
        if outcome in _BUYER_KEEPS:
            refunded, _ = _minor((data.get("dispute_outcome") or {}).get("amount_refunded"))
            kept = min(refunded, amount) if refunded else amount
        else:
            kept = 0
        if amount - kept > 0:
            found.append(DisputeMoney(f"{dispute_id}:released", amount - kept, 0, currency))
    fees: dict[str, tuple[int, str]] = {}
    for movement in data.get("money_movements") or []:
        if not isinstance(movement, Mapping) or movement.get("affected_party") != "SELLER":
            continue
        reason = str(movement.get("reason") or "")
        if reason not in _FEES:
            continue
        value, fee_currency = _minor(movement.get("amount"))
        sign = -1 if movement.get("type") == "CREDIT" else 1
        before, _ = fees.get(reason, (0, fee_currency))
        fees[reason] = (before + sign * value, fee_currency)
    for reason, (fee, fee_currency) in sorted(fees.items()):
        if fee:
            found.append(DisputeMoney(f"{dispute_id}:fee:{reason}", 0, fee, fee_currency))
    return tuple(found)


def dispute_from(data: Mapping[str, Any], payment_id: str) -> ProviderDispute:
    """A PayPal dispute; `payment_id` is the order of its capture (capture_of), "" if none."""
    dispute_id = str(data["dispute_id"])
    amount, currency = _minor(data.get("dispute_amount"))
    outcome = str((data.get("dispute_outcome") or {}).get("outcome_code") or "")
    return ProviderDispute(
        id=dispute_id,
        payment_id=payment_id,
        amount_minor=amount,
        currency=currency,
        status=_status(data, outcome),
        reason=str(data.get("reason") or "").lower(),
        money=_money(dispute_id, data, amount, currency, outcome),
    )
