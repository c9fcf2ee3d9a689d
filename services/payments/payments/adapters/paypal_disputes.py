"""PayPal's disputes in the domain's words: the dispute webhook events (`CUSTOMER.DISPUTE.*`) and
a dispute (`GET /v1/customer/disputes/{id}`) read as a ProviderDispute.

PayPal has no balance transactions: it holds the disputed amount from the seller's balance when
the dispute opens and releases it when the seller wins (or the buyer cancels, or PayPal pays the
buyer itself); a dispute the buyer wins keeps it taken (less any part PayPal released). Those
movements are read as the domain's money under ids of their own, derived from the dispute
(`<dispute>:held`, `<dispute>:released`), so each is booked once whatever the event that
re-fetched it. The dispute's fees (`money_movements` debited from the seller for a dispute or
chargeback fee) are money of their own too (`<dispute>:fee:<reason>`), a running total: a later
view with another amount books the difference (DisputeMoney.adjustment).

Read exactly, never converted (PayPal's Customer Disputes API, `dispute` object): the refund to
the buyer (`dispute_outcome.amount_refunded`, "the amount that either the merchant or PayPal
refunds the customer") carries its own currency; only one in the held amount's currency is
compared with it. One in another currency leaves the release to what PayPal's seller money
movements say in the held amount's currency (`DISPUTE_SETTLEMENT` credits), and with none the
release is not booked but named (ProviderDispute.unbooked).

A dispute's `disputed_transactions` may be captures of several orders (several of Hirepay's
payments). PayPal gives one `dispute_amount` and one list of money movements for them all; per
transaction its `gross_amount` (what was captured) and, optionally, its items' `dispute_amount`.
Each payment is booked its share (ProviderDispute.shares, recorded as `<dispute>/<order>`, its
money under `<dispute>:<order>:held|released|fee:<reason>`), split in integer minor units by the
first rule that applies, all amounts in the dispute's currency (a transaction's gross amount in
another: no split, nothing booked, named):
  1. `items`: every disputed transaction names its items' disputed amounts, they sum to the
     dispute's amount and none exceeds its transaction's gross amount: each capture's share is
     its items' sum (exact, PayPal's own split);
  2. `gross`: the dispute's amount is the transactions' gross amounts summed: each capture is
     disputed in full (exact);
  3. `pro_rata_gross`: less than that: the dispute's amount split in proportion to the gross
     amounts by largest remainder (split_exactly: the parts sum to the dispute's amount, none
     more than its capture; PayPal does not say which capture the part it did not dispute is
     of, so this is Hirepay's rule, named in each share's audit entry as `split`);
  4. more than that (PayPal never disputes more than was captured): each capture in full, the
     rest not booked and named.
A payment's share is the sum of its captures'. The release and each fee are split in proportion
to the shares by the same largest-remainder rule (exact sums, a release never more than a
share). A capture whose order PayPal does not know has its share named, never booked on
another payment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from hirepay_platform import money
from payments.domain.disputes import (
    SHARE_SEPARATOR,
    DisputeMoney,
    DisputeStatus,
    ProviderDispute,
    split_exactly,
)

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


def captures_of(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Every capture the dispute is about (its disputed transactions' ids as the seller sees
    them, each once, in PayPal's order): PayPal's capture ids, whose orders are the domain's
    payments."""
    found: list[str] = []
    for tx in data.get("disputed_transactions") or []:
        if isinstance(tx, Mapping) and tx.get("seller_transaction_id"):
            capture = str(tx["seller_transaction_id"])
            if capture not in found:
                found.append(capture)
    return tuple(found)


def capture_of(data: Mapping[str, Any]) -> str:
    """The first disputed capture ("" if none)."""
    captures = captures_of(data)
    return captures[0] if captures else ""


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


def _released(data: Mapping[str, Any], amount: int, currency: str, outcome: str) -> tuple[int, str]:
    """The part of the hold PayPal gave back to the seller when it resolved the dispute, in
    the held amount's currency, and a note when it cannot be known exactly ("" if it is)."""
    if outcome not in _BUYER_KEEPS:
        return amount, ""  # the seller won (or the buyer cancelled): all of it released
    refund = (data.get("dispute_outcome") or {}).get("amount_refunded")
    refunded, refund_currency = _minor(refund)
    if not refunded:
        return 0, ""  # the buyer keeps it all
    if refund_currency == currency:
        return amount - min(refunded, amount), ""
    # Refunded in another currency: never compared with the held amount, nor converted. What
    # PayPal credited the seller back in the held amount's currency is exact; without it, the
    # release is unknown and left unbooked (the hold stays taken), named for the audit.
    credited = _seller_settlements(data, currency)
    if credited:
        return min(credited, amount), ""
    value = str((refund or {}).get("value") or "")
    return 0, (
        f"amount_refunded {value} {refund_currency} is in another currency than the"
        f" {Decimal(amount).scaleb(-money.exponent(currency))} {currency} held: the part released to the"
        f" seller is not known in {currency} and not booked"
    )


def _seller_settlements(data: Mapping[str, Any], currency: str) -> int:
    """The disputed money PayPal credited back to the seller (`DISPUTE_SETTLEMENT` credits),
    in `currency` only."""
    credited = 0
    for movement in data.get("money_movements") or []:
        if (
            isinstance(movement, Mapping)
            and movement.get("affected_party") == "SELLER"
            and movement.get("reason") == "DISPUTE_SETTLEMENT"
            and movement.get("type") == "CREDIT"
        ):
            value, moved_in = _minor(movement.get("amount"))
            if moved_in == currency:
                credited += value
    return credited


def _money(
    dispute_id: str, data: Mapping[str, Any], amount: int, currency: str, outcome: str
) -> tuple[tuple[DisputeMoney, ...], tuple[str, ...]]:
    """The hold when it opened, its release when the buyer did not keep it all, the fees (each
    a running total per reason, in its own currency); and what could not be booked exactly."""
    if amount <= 0:
        return (), ()
    found = [DisputeMoney(f"{dispute_id}:held", -amount, 0, currency)]
    unbooked: list[str] = []
    if str(data.get("status") or "") == "RESOLVED":
        released, note = _released(data, amount, currency, outcome)
        if released > 0:
            found.append(DisputeMoney(f"{dispute_id}:released", released, 0, currency))
        if note:
            unbooked.append(note)
    fees: dict[tuple[str, str], int] = {}
    for movement in data.get("money_movements") or []:
        if not isinstance(movement, Mapping) or movement.get("affected_party") != "SELLER":
            continue
        reason = str(movement.get("reason") or "")
        if reason not in _FEES:
            continue
        value, fee_currency = _minor(movement.get("amount"))
        sign = -1 if movement.get("type") == "CREDIT" else 1
        key = (reason, fee_currency)
        fees[key] = fees.get(key, 0) + sign * value
    for (reason, fee_currency), fee in sorted(fees.items()):
        # Kept at 0 too (a fee given back in full): the ledger must follow it back to 0.
        # One id per reason and currency; a fee in the held amount's currency keeps the id
        # bookings made before fees in other currencies were told apart.
        suffix = "" if fee_currency in (currency, "") else f":{fee_currency}"
        found.append(
            DisputeMoney(f"{dispute_id}:fee:{reason}{suffix}", 0, fee, fee_currency, running=True)
        )
    return tuple(found), tuple(unbooked)


def _updated(data: Mapping[str, Any]) -> datetime | None:
    """PayPal's `update_time` (RFC 3339), None if absent or unreadable."""
    raw = str(data.get("update_time") or "")
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None


def dispute_from(
    data: Mapping[str, Any], payment_id: str, payment_ids: tuple[str, ...] = ()
) -> ProviderDispute:
    """A PayPal dispute; `payment_id` is the order of its captures (captures_of), "" if none or
    if they are of several orders, then `payment_ids` holds each capture's order (in
    captures_of's order, "" for one PayPal does not know) and each order's share is a view of
    its own (`shares`)."""
    dispute_id = str(data["dispute_id"])
    amount, currency = _minor(data.get("dispute_amount"))
    outcome = str((data.get("dispute_outcome") or {}).get("outcome_code") or "")
    found, unbooked = _money(dispute_id, data, amount, currency, outcome)
    view = ProviderDispute(
        id=dispute_id,
        payment_id=payment_id,
        amount_minor=amount,
        currency=currency,
        status=_status(data, outcome),
        reason=str(data.get("reason") or "").lower(),
        money=found,
        updated_at=_updated(data),
        unbooked=unbooked,
        payment_ids=payment_ids,
    )
    if payment_id or len(set(payment_ids)) < 2 or amount <= 0:
        return view
    return _shared(view, data)


def _capture_amounts(
    data: Mapping[str, Any], currency: str
) -> tuple[list[int], list[int] | None, str]:
    """Each disputed capture's gross amount (captures_of's order), its items' disputed amounts
    summed (None unless every capture names them, all in `currency`), and a note if a gross
    amount is not in `currency` ("" if all are)."""
    seen: dict[str, int] = {}
    items: dict[str, int | None] = {}
    for tx in data.get("disputed_transactions") or []:
        if not isinstance(tx, Mapping) or not tx.get("seller_transaction_id"):
            continue
        capture = str(tx["seller_transaction_id"])
        if capture in seen:
            continue
        gross, gross_currency = _minor(tx.get("gross_amount"))
        if gross_currency != currency:
            return (
                [],
                None,
                (
                    f"capture {capture}'s gross amount is in {gross_currency or 'no currency'}, not"
                    f" the dispute's {currency}: no share is known, nothing booked"
                ),
            )
        seen[capture] = gross
        listed = [i for i in tx.get("items") or [] if isinstance(i, Mapping)]
        amounts = [_minor(i.get("dispute_amount")) for i in listed]
        known = bool(amounts) and all(c == currency for _, c in amounts)
        items[capture] = sum(a for a, _ in amounts) if known else None
    per_item = list(items.values())
    if any(v is None for v in per_item):
        return list(seen.values()), None, ""
    return list(seen.values()), [int(v or 0) for v in per_item], ""


def _split(amount: int, gross: list[int], items: list[int] | None) -> tuple[list[int], str, int]:
    """Each capture's share of the disputed amount, the rule's name, and what no capture can
    take (> 0 only if PayPal disputes more than the captures' gross amounts)."""
    if items is not None and sum(items) == amount and all(map(int.__le__, items, gross)):
        return items, "items", 0
    whole = sum(gross)
    if whole == amount:
        return list(gross), "gross", 0
    if 0 < amount < whole:
        return split_exactly(amount, gross), "pro_rata_gross", 0
    return list(gross), "gross", amount - whole


def _shared(view: ProviderDispute, data: Mapping[str, Any]) -> ProviderDispute:
    """A dispute of several orders with each order's share (module doc): its money split, each
    share's under ids of its own; what cannot be split exactly named in `unbooked`."""
    amount, currency = view.amount_minor, view.currency
    gross, items, note = _capture_amounts(data, currency)
    if note or len(gross) != len(view.payment_ids):
        return replace(view, unbooked=(*view.unbooked, note or "the disputed captures are unclear"))
    parts, rule, over = _split(amount, gross, items)
    orders: dict[str, int] = {}
    for order, part in zip(view.payment_ids, parts, strict=True):
        orders[order] = orders.get(order, 0) + part
    notes = list(view.unbooked)
    if over:
        notes.append(
            f"{_decimal(over, currency)} {currency} disputed beyond the captures' gross amounts:"
            " not booked"
        )
    if orders.get("", 0):
        notes.append(
            f"{_decimal(orders[''], currency)} {currency} of captures whose order PayPal does"
            " not know: not booked"
        )
    names, weights = list(orders), list(orders.values())
    # Each movement split by the shares (a fee given back in part may be below 0).
    split = {
        m.id: _signed_split(m.amount_minor, weights) if m.amount_minor > 0 else None
        for m in view.money
    }
    fees = {m.id: _signed_split(m.fee_minor, weights) for m in view.money}
    shares = []
    for n, (order, share) in enumerate(zip(names, weights, strict=True)):
        if not order or share <= 0:
            continue
        money = []
        for m in view.money:
            released = split[m.id]
            moved = -share if m.amount_minor < 0 else (released[n] if released else 0)
            fee = fees[m.id][n]
            if not moved and not fee and not m.running:
                continue
            suffix = m.id.removeprefix(view.id)
            money.append(
                replace(m, id=f"{view.id}:{order}{suffix}", amount_minor=moved, fee_minor=fee)
            )
        shares.append(
            replace(
                view,
                id=f"{view.id}{SHARE_SEPARATOR}{order}",
                payment_id=order,
                amount_minor=share,
                money=tuple(money),
                unbooked=tuple(notes),
                payment_ids=(),
                split=rule,
            )
        )
    return replace(view, unbooked=tuple(notes), shares=tuple(shares), split=rule)


def _signed_split(total: int, weights: list[int]) -> list[int]:
    """split_exactly of a total of either sign."""
    parts = split_exactly(abs(total), weights)
    return parts if total >= 0 else [-p for p in parts]


def _decimal(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-money.exponent(currency))
