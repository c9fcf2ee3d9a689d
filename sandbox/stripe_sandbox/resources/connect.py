"""Connect: connected accounts, transfers to them, and payouts that are paid or fail later."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stripe_sandbox import ids
from stripe_sandbox.errors import invalid_request, no_such
from stripe_sandbox.params import Params, merge_metadata
from stripe_sandbox.store import Context, StripeObject

if TYPE_CHECKING:
    from stripe_sandbox.runtime import Sandbox

ACCOUNT_TYPES = ("standard", "express", "custom")

# Stripe's payout failure codes and their messages.
PAYOUT_FAILURES = {
    "account_closed": "The bank account has been closed.",
    "account_frozen": "The bank account has been frozen.",
    "bank_account_restricted": "The bank account has restrictions on either the type, or the "
    "number, of payouts allowed.",
    "could_not_process": "The bank could not process this payout.",
    "declined": "The bank has declined this transfer.",
    "insufficient_funds": "Your Stripe account has insufficient funds to cover the payout.",
    "invalid_account_number": "The routing number seems correct, but the account number is "
    "invalid.",
    "no_account": "The bank account details on file are probably incorrect. No bank account "
    "could be located with those details.",
}

# -- accounts --------------------------------------------------------------------------------


def create_account(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    account_type = p.enum("type", ACCOUNT_TYPES, default="express")
    country = (p.text("country") or "US").upper()
    account: StripeObject = {
        "id": ids.new_id("acct"),
        "object": "account",
        "business_profile": {"name": None, "url": None, "mcc": None},
        "business_type": p.text("business_type"),
        "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True,
        "country": country,
        "created": sb.store.now(),
        "default_currency": p.currency("default_currency") or "usd",
        "details_submitted": True,
        "email": p.text("email"),
        "metadata": p.metadata() or {},
        "payouts_enabled": True,
        "requirements": {
            "currently_due": [],
            "disabled_reason": None,
            "eventually_due": [],
            "past_due": [],
        },
        "settings": {"payouts": {"schedule": {"interval": "manual"}}},
        "type": account_type,
    }
    return sb.store.add("account", account)


def retrieve_account(sb: Sandbox, ctx: Context, p: Params, account: str) -> StripeObject:
    return sb.store.get("account", account)


def update_account(sb: Sandbox, ctx: Context, p: Params, account: str) -> StripeObject:
    obj = sb.store.get("account", account)
    previous: StripeObject = {}
    if "email" in p and p.text("email") != obj["email"]:
        previous["email"] = obj["email"]
        obj["email"] = p.text("email")
    metadata = merge_metadata(obj["metadata"], p.metadata())
    if metadata != obj["metadata"]:
        previous["metadata"] = obj["metadata"]
        obj["metadata"] = metadata
    if previous:
        sb.store.emit("account.updated", obj, ctx, previous)
    return obj


def list_accounts(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    return sb.store.list("account", p, "/v1/accounts")


def require_account(sb: Sandbox, account: str | None) -> None:
    """The `Stripe-Account` header must name a connected account of this platform."""
    if account is not None and account not in sb.store.objects.get("account", {}):
        raise invalid_request(
            f"The provided key does not have access to account '{account}' (or that account "
            "does not exist). Application access may have been revoked.",
            code="account_invalid",
            status=403,
        )


# -- transfers -------------------------------------------------------------------------------


def create_transfer(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    amount = p.integer("amount", required=True, minimum=1)
    currency = p.currency("currency", required=True)
    destination = p.text("destination", required=True)
    assert destination is not None
    if destination not in sb.store.objects.get("account", {}):
        raise no_such("destination", destination, param="destination")
    source_transaction = p.text("source_transaction")
    if source_transaction is not None:
        sb.store.get("charge", source_transaction, ctx.account, param="source_transaction")
    transfer_id = ids.new_id("tr")
    transfer: StripeObject = {
        "id": transfer_id,
        "object": "transfer",
        "amount": amount,
        "amount_reversed": 0,
        "balance_transaction": None,
        "created": sb.store.now(),
        "currency": currency,
        "description": p.text("description"),
        "destination": destination,
        "destination_payment": ids.new_id("py"),
        "livemode": False,
        "metadata": p.metadata() or {},
        "reversals": {
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/transfers/{transfer_id}/reversals",
        },
        "reversed": False,
        "source_transaction": source_transaction,
        "source_type": "card",
        "transfer_group": p.text("transfer_group"),
    }
    sb.store.add("transfer", transfer, ctx.account)
    sb.store.emit("transfer.created", transfer, ctx)
    return transfer


def retrieve_transfer(sb: Sandbox, ctx: Context, p: Params, transfer: str) -> StripeObject:
    return sb.store.get("transfer", transfer, ctx.account)


def update_transfer(sb: Sandbox, ctx: Context, p: Params, transfer: str) -> StripeObject:
    obj = sb.store.get("transfer", transfer, ctx.account)
    previous: StripeObject = {}
    if "description" in p:
        previous["description"] = obj["description"]
        obj["description"] = p.text("description")
    metadata = merge_metadata(obj["metadata"], p.metadata())
    if metadata != obj["metadata"]:
        previous["metadata"] = obj["metadata"]
        obj["metadata"] = metadata
    if previous:
        sb.store.emit("transfer.updated", obj, ctx, previous)
    return obj


def list_transfers(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    destination = p.text("destination")
    group = p.text("transfer_group")
    return sb.store.list(
        "transfer",
        p,
        "/v1/transfers",
        ctx.account,
        where=lambda t: (
            (destination is None or t["destination"] == destination)
            and (group is None or t["transfer_group"] == group)
        ),
    )


# -- payouts ---------------------------------------------------------------------------------


def create_payout(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    amount = p.integer("amount", required=True, minimum=1)
    currency = p.currency("currency", required=True)
    now = sb.store.now()
    payout: StripeObject = {
        "id": ids.new_id("po"),
        "object": "payout",
        "amount": amount,
        "arrival_date": now + 2 * 24 * 3600,
        "automatic": False,
        "balance_transaction": None,
        "created": now,
        "currency": currency,
        "description": p.text("description"),
        "destination": p.text("destination") or ids.new_id("ba"),
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": p.metadata() or {},
        "method": p.enum("method", ("standard", "instant"), default="standard"),
        "source_type": p.enum("source_type", ("card", "bank_account", "fpx"), default="card"),
        "statement_descriptor": p.text("statement_descriptor"),
        "status": "pending",
        "type": "bank_account",
    }
    sb.store.add("payout", payout, ctx.account)
    failure = sb.faults.take_payout_failure()
    if failure is not None:
        sb.store.meta(payout["id"])["failure_code"] = failure.failure_code
    sb.store.emit("payout.created", payout, ctx)
    if sb.config.payout_settle_after is not None:
        payout_id = payout["id"]
        sb.background.call_later(
            sb.config.payout_settle_after,
            lambda: _auto_settle(sb, payout_id),
            name=f"payout {payout_id}",
        )
    return payout


def _auto_settle(sb: Sandbox, payout_id: str) -> None:
    payout = sb.store.objects.get("payout", {}).get(payout_id)
    if payout is not None and payout["status"] in ("pending", "in_transit"):
        failure_code = sb.store.meta(payout_id).get("failure_code")
        settle_payout(sb, payout, "failed" if failure_code else "paid", failure_code)


def settle_payout(
    sb: Sandbox, payout: StripeObject, outcome: str, failure_code: str | None = None
) -> None:
    """The bank pays the payout out (`paid`) or returns it (`failed`)."""
    if payout["status"] not in ("pending", "in_transit"):
        raise invalid_request(
            f"Payout {payout['id']} has status {payout['status']} and cannot be settled.",
            code="payout_unexpected_state",
        )
    if outcome == "paid":
        payout["status"] = "paid"
        sb.store.emit("payout.paid", payout, None)
        return
    code = failure_code or "account_closed"
    payout["status"] = "failed"
    payout["failure_code"] = code
    payout["failure_message"] = PAYOUT_FAILURES.get(code, "The payout failed.")
    sb.store.emit("payout.failed", payout, None)


def retrieve_payout(sb: Sandbox, ctx: Context, p: Params, payout: str) -> StripeObject:
    return sb.store.get("payout", payout, ctx.account)


def cancel_payout(sb: Sandbox, ctx: Context, p: Params, payout: str) -> StripeObject:
    obj = sb.store.get("payout", payout, ctx.account)
    if obj["status"] != "pending":
        raise invalid_request(
            f"Payouts can only be canceled while they are pending; this one is {obj['status']}.",
            code="payout_unexpected_state",
        )
    obj["status"] = "canceled"
    sb.store.emit("payout.canceled", obj, ctx)
    return obj


def list_payouts(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    status = p.text("status")
    return sb.store.list(
        "payout",
        p,
        "/v1/payouts",
        ctx.account,
        where=lambda po: status is None or po["status"] == status,
    )
