"""Connect: connected accounts, transfers to them, and payouts that are paid or fail later."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox_kit.jsondata import copy_json
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

# Stripe's documented test bank account numbers for Connect payouts (US routing 110000000):
# a payout to one of these fails with the code; any other number is paid.
TEST_BANK_ACCOUNT_FAILURES = {
    "000111111116": "no_account",
    "000111111113": "account_closed",
    "000222222227": "insufficient_funds",
    "000333333335": "debit_not_authorized",
    "000444444440": "invalid_currency",
}
PAYOUT_FAILURES["debit_not_authorized"] = "Debit transactions are not approved on the bank account."
PAYOUT_FAILURES["invalid_currency"] = "The bank was unable to process this payout because of its "
PAYOUT_FAILURES["invalid_currency"] += "currency."
# What an account without a bank account of its own is given (Stripe's "payout succeeds" number).
DEFAULT_TEST_ACCOUNT_NUMBER = "000123456789"
DEFAULT_ROUTING_NUMBER = "110000000"
ACCOUNT_LINK_TYPES = ("account_onboarding", "account_update")
# What an express/standard account lacks until onboarding (SANDBOX_CONNECT_ONBOARDING=hosted).
ONBOARDING_REQUIREMENTS = ("business_type", "external_account", "tos_acceptance.date")
ACCOUNT_LINK_TTL = 300  # Stripe's account links expire after a few minutes

# -- accounts --------------------------------------------------------------------------------


def _external_account(
    sb: Sandbox, account_id: str, p: Params, currency: str, country: str
) -> StripeObject:
    """A bank account (`external_account[...]`), its number kept only as sandbox meta."""
    number = p.text("account_number") or DEFAULT_TEST_ACCOUNT_NUMBER
    if not number.isdigit() or not 4 <= len(number) <= 17:
        raise invalid_request(
            "The account number is invalid.", param="external_account[account_number]"
        )
    bank: StripeObject = {
        "id": ids.new_id("ba"),
        "object": "bank_account",
        "account": account_id,
        "account_holder_name": p.text("account_holder_name"),
        "bank_name": "STRIPE TEST BANK",
        "country": (p.text("country") or country).upper(),
        "currency": p.currency("currency") or currency,
        "default_for_currency": True,
        "last4": number[-4:],
        "routing_number": p.text("routing_number") or DEFAULT_ROUTING_NUMBER,
        "status": "new",
    }
    sb.store.meta(bank["id"])["account_number"] = number
    return bank


def _set_external_account(sb: Sandbox, account: StripeObject, p: Params) -> None:
    bank = _external_account(sb, account["id"], p, account["default_currency"], account["country"])
    account["external_accounts"] = {
        "object": "list",
        "data": [bank],
        "has_more": False,
        "total_count": 1,
        "url": f"/v1/accounts/{account['id']}/external_accounts",
    }


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
    _set_external_account(sb, account, p.sub("external_account"))
    if sb.config.connect_onboarding == "hosted" and account_type != "custom":
        # Like Stripe: the person must go through the account link's page before payouts.
        account.update(charges_enabled=False, details_submitted=False, payouts_enabled=False)
        account["requirements"]["currently_due"] = list(ONBOARDING_REQUIREMENTS)
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
    if "external_account" in p:
        previous["external_accounts"] = obj["external_accounts"]
        _set_external_account(sb, obj, p.sub("external_account"))
    if previous:
        sb.store.emit("account.updated", obj, ctx, previous)
    return obj


def delete_account(sb: Sandbox, ctx: Context, p: Params, account: str) -> StripeObject:
    """Close a connected account: transfers to it and requests on its behalf are refused."""
    obj = sb.store.get("account", account)
    del sb.store.objects["account"][obj["id"]]
    return {"id": obj["id"], "object": "account", "deleted": True}


def create_account_link(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    """An onboarding link. In the sandbox the account is usable at once; the page at the link
    redirects to `return_url`, as Stripe's does once the person has finished."""
    account_id = p.text("account", required=True)
    sb.store.get("account", account_id, param="account")
    p.text("type", required=True)
    p.enum("type", ACCOUNT_LINK_TYPES)
    return_url = p.text("return_url")
    refresh_url = p.text("refresh_url")
    token = ids.new_id("link")
    sb.store.meta(token).update({"account": account_id, "return_url": return_url})
    now = sb.store.now()
    return {
        "object": "account_link",
        "created": now,
        "expires_at": now + ACCOUNT_LINK_TTL,
        "url": f"{ctx.base_url}/connect/onboarding/{token}",
        "refresh_url": refresh_url,
        "return_url": return_url,
    }


def complete_onboarding(sb: Sandbox, token: str) -> str | None:
    """The person went through an account link's page: the account is complete (payouts
    enabled, `account.updated` emitted). Where the page sends them (None: an unknown link)."""
    meta = sb.store.internal.get(token)
    if not meta or "account" not in meta:
        return None
    account = sb.store.objects.get("account", {}).get(meta["account"])
    if account is not None and not account["payouts_enabled"]:
        previous = {
            "payouts_enabled": False,
            "requirements": copy_json(account["requirements"]),
        }
        account.update(charges_enabled=True, details_submitted=True, payouts_enabled=True)
        account["requirements"]["currently_due"] = []
        sb.store.emit("account.updated", account, None, previous)
    return str(meta.get("return_url") or "")


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


def create_reversal(sb: Sandbox, ctx: Context, p: Params, transfer: str) -> StripeObject:
    """Take (part of) a transfer back from the connected account to the platform."""
    obj = sb.store.get("transfer", transfer, ctx.account)
    remaining = obj["amount"] - obj["amount_reversed"]
    amount = p.integer("amount", minimum=1)
    amount = remaining if amount is None else amount
    if amount > remaining or remaining == 0:
        raise invalid_request(
            f"Amount ({amount}) is greater than the amount that can be reversed ({remaining}).",
            param="amount",
        )
    reversal: StripeObject = {
        "id": ids.new_id("trr"),
        "object": "transfer_reversal",
        "amount": amount,
        "balance_transaction": None,
        "created": sb.store.now(),
        "currency": obj["currency"],
        "destination_payment_refund": None,
        "metadata": p.metadata() or {},
        "source_refund": None,
        "transfer": obj["id"],
    }
    sb.store.add("transfer_reversal", reversal, ctx.account)
    obj["amount_reversed"] += amount
    obj["reversed"] = obj["amount_reversed"] == obj["amount"]
    obj["reversals"]["data"].insert(0, reversal)
    obj["reversals"]["total_count"] += 1
    sb.store.emit("transfer.reversed", obj, ctx)
    return reversal


def list_reversals(sb: Sandbox, ctx: Context, p: Params, transfer: str) -> StripeObject:
    sb.store.get("transfer", transfer, ctx.account)
    return sb.store.list(
        "transfer_reversal",
        p,
        f"/v1/transfers/{transfer}/reversals",
        ctx.account,
        where=lambda r: r["transfer"] == transfer,
    )


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


def _payout_destination(sb: Sandbox, ctx: Context, p: Params) -> tuple[str, str | None]:
    """(bank account id, the failure its test number triggers) of a payout: the connected
    account's bank account (or `destination`), else a platform bank account that pays."""
    destination = p.text("destination")
    if ctx.account is None:
        return destination or ids.new_id("ba"), None
    account = sb.store.get("account", ctx.account)
    banks = account.get("external_accounts", {}).get("data", [])
    bank = next((b for b in banks if destination in (None, b["id"])), None)
    if bank is None:
        raise no_such("external account", destination or "", param="destination")
    number = sb.store.meta(bank["id"]).get("account_number", "")
    return bank["id"], TEST_BANK_ACCOUNT_FAILURES.get(number)


def create_payout(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    amount = p.integer("amount", required=True, minimum=1)
    currency = p.currency("currency", required=True)
    destination, bank_failure = _payout_destination(sb, ctx, p)
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
        "destination": destination,
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
        if failure.after_paid:
            sb.store.meta(payout["id"])["returned_after_paid"] = True
    elif bank_failure is not None:
        sb.store.meta(payout["id"])["failure_code"] = bank_failure
    sb.store.emit("payout.created", payout, ctx)
    _schedule_settlement(sb, payout["id"])
    return payout


def _schedule_settlement(sb: Sandbox, payout_id: str) -> None:
    if sb.config.payout_settle_after is not None:
        sb.background.call_later(
            sb.config.payout_settle_after,
            lambda: _auto_settle(sb, payout_id),
            name=f"payout {payout_id}",
        )


def resume_payouts(sb: Sandbox) -> int:
    """After a restart from the state file: payouts still on their way settle as they would
    have (the bank does not forget them because the sandbox process restarted)."""
    waiting = [
        payout_id
        for payout_id, payout in sb.store.objects.get("payout", {}).items()
        if payout["status"] in ("pending", "in_transit")
        or (payout["status"] == "paid" and sb.store.meta(payout_id).get("returned_after_paid"))
    ]
    for payout_id in waiting:
        _schedule_settlement(sb, payout_id)
    return len(waiting)


def _auto_settle(sb: Sandbox, payout_id: str) -> None:
    payout = sb.store.objects.get("payout", {}).get(payout_id)
    if payout is None:
        return
    meta = sb.store.meta(payout_id)
    failure_code = meta.get("failure_code")
    if payout["status"] in ("pending", "in_transit"):
        if failure_code and meta.get("returned_after_paid"):
            settle_payout(sb, payout, "paid")
            _schedule_settlement(sb, payout_id)  # the bank sends it back a moment later
            return
        settle_payout(sb, payout, "failed" if failure_code else "paid", failure_code)
    elif payout["status"] == "paid" and failure_code and meta.get("returned_after_paid"):
        settle_payout(sb, payout, "failed", failure_code)


def settle_payout(
    sb: Sandbox, payout: StripeObject, outcome: str, failure_code: str | None = None
) -> None:
    """The bank pays the payout out (`paid`) or returns it (`failed`) — also after it was paid:
    a paid payout can still fail (`payout.paid`, then `payout.failed`), never the other way."""
    if payout["status"] == "paid" and outcome == "failed":
        _fail(sb, payout, failure_code)
        return
    if payout["status"] not in ("pending", "in_transit"):
        raise invalid_request(
            f"Payout {payout['id']} has status {payout['status']} and cannot be settled.",
            code="payout_unexpected_state",
        )
    if outcome == "paid":
        payout["status"] = "paid"
        sb.store.emit("payout.paid", payout, None)
        return
    _fail(sb, payout, failure_code)


def _fail(sb: Sandbox, payout: StripeObject, failure_code: str | None) -> None:
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
