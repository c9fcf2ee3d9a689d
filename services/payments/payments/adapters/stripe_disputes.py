"""Stripe's disputes in the domain's words: the dispute events a webhook endpoint enables and the
Dispute object read as a ProviderDispute (its balance transactions: the money withdrawn when it
opened, reinstated when won, and Stripe's dispute fee)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payments.domain.disputes import STATUS_OF, DisputeMoney, DisputeStatus, ProviderDispute

# Every change of a dispute Stripe reports (https://docs.stripe.com/api/events/types): opened,
# its funds withdrawn or reinstated, its evidence or status updated, closed (won, lost or
# warning_closed). Each is applied from the dispute re-fetched, so any of them settles it.
DISPUTE_EVENT_TYPES = (
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "charge.dispute.closed",
)


def _money(bt: Mapping[str, Any]) -> DisputeMoney:
    """A balance transaction of a dispute (its `fee` is Stripe's dispute fee)."""
    return DisputeMoney(
        id=str(bt["id"]),
        amount_minor=int(bt.get("amount") or 0),
        fee_minor=int(bt.get("fee") or 0),
        currency=str(bt.get("currency") or "").upper(),
        exchange_rate=str(bt.get("exchange_rate") or ""),
    )


def dispute_from(data: Mapping[str, Any]) -> ProviderDispute:
    """A Stripe Dispute (an unknown status reads as one still needing a response: never closed
    by a word Hirepay does not know)."""
    charge = data.get("charge")
    intent = data.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    if not intent and isinstance(charge, dict):
        intent = charge.get("payment_intent")
    return ProviderDispute(
        id=str(data["id"]),
        payment_id=str(intent or ""),
        amount_minor=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").upper(),
        status=STATUS_OF.get(str(data.get("status") or ""), DisputeStatus.NEEDS_RESPONSE),
        reason=str(data.get("reason") or ""),
        money=tuple(
            _money(bt) for bt in data.get("balance_transactions") or [] if isinstance(bt, dict)
        ),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )
