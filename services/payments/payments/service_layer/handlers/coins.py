"""Coins through a provider checkout (ESC-3) and the direct payment of a job (ESC-5): a hosted
checkout that captures at once, whose coin terms are fixed in the payment's metadata when it is
opened. The success webhook (or the return, or the watch poller) captures it; the capture's
ledger booking then issues the coins (and funds the escrow) once, under `payment:<id>:capture`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from hirepay_platform import money
from hirepay_platform.tcc import TccBranch
from payments.domain import commands, errors, ledger
from payments.domain.ledger import Purpose
from payments.domain.model import Method, Payment
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.tcc import authorize


@dataclass(frozen=True, slots=True)
class CoinCheckoutResult:
    payment: Payment
    coins: int
    fee_coins: int
    replayed: bool

    @property
    def escrow_coins(self) -> int:
        """What a job payment puts in escrow (0 for a coin purchase)."""
        if ledger.purpose_of(self.payment.metadata) is not Purpose.JOB_PAYMENT:
            return 0
        return self.coins - self.fee_coins

    @property
    def checkout_url(self) -> str:
        return self.payment.next_action_url


def _branch(kind: str, *parts: str) -> TccBranch:
    """The checkout's branch: one payment per request (a coin purchase) or per engagement."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
    return TccBranch(f"{kind}.{digest}", "checkout")


def _required(value: str, name: str) -> str:
    if not value.strip() or len(value) > 200:
        raise errors.invalid(name, "is required (at most 200 characters)")
    return value


async def purchase_coins(cmd: commands.CoinCheckout, deps: Deps) -> CoinCheckoutResult:
    """Open a checkout selling the coins `amount_minor` buys at the configured rate."""
    _required(cmd.request_id, "request_id")
    _required(cmd.payer_id, "buyer_id")
    coins = _coins(cmd, deps)
    metadata = {
        ledger.TYPE_KEY: Purpose.COIN_PURCHASE.value,
        ledger.PURPOSE_KEY: Purpose.COIN_PURCHASE.value,
        ledger.COINS_KEY: str(coins),
        "coin_rate": str(deps.config.coin_rates[cmd.currency]),
    }
    branch = _branch("coins", cmd.payer_id, cmd.request_id)
    return await _open(cmd, branch, metadata, f"{coins} coins", coins, 0, deps)


async def create_job_payment_checkout(cmd: commands.CoinCheckout, deps: Deps) -> CoinCheckoutResult:
    """Open the checkout of a direct job payment: its coins, the platform's funding fee in coins
    and the escrow of the engagement (`engagement:<id>`) are fixed now; one per engagement."""
    _required(cmd.request_id, "request_id")
    _required(cmd.payer_id, "payer_id")
    for value, name in (
        (cmd.engagement_id, "engagement_id"),
        (cmd.job_id, "job_id"),
        (cmd.freelancer_id, "freelancer_id"),
    ):
        _required(value, name)
    if cmd.freelancer_id == cmd.payer_id:
        raise errors.invalid("freelancer_id", "must not be the payer")
    coins = _coins(cmd, deps)
    fee = ledger.funding_fee(coins, deps.config.job_payment_fee_bps)
    metadata = {
        ledger.TYPE_KEY: Purpose.JOB_PAYMENT.value,
        ledger.PURPOSE_KEY: Purpose.JOB_PAYMENT.value,
        ledger.ENGAGEMENT_KEY: cmd.engagement_id,
        "job_id": cmd.job_id,
        "freelancer_id": cmd.freelancer_id,
        ledger.COINS_KEY: str(coins),
        ledger.FEE_COINS_KEY: str(fee),
        "coin_rate": str(deps.config.coin_rates[cmd.currency]),
        "subsystem": "jobs",  # the jobs service follows its settlement events
    }
    branch = _branch("job-payment", cmd.engagement_id)
    return await _open(cmd, branch, metadata, f"Job {cmd.job_id}", coins, fee, deps)


def _coins(cmd: commands.CoinCheckout, deps: Deps) -> int:
    money.validate_amount(cmd.amount_minor, field="amount.amount_minor")
    currency = money.validate_unit(cmd.currency, field="amount.currency", cash_only=True)
    return ledger.coins_for(cmd.amount_minor, currency, deps.config.coin_rates)


async def _open(
    cmd: commands.CoinCheckout,
    branch: TccBranch,
    metadata: dict[str, str],
    description: str,
    coins: int,
    fee: int,
    deps: Deps,
) -> CoinCheckoutResult:
    if not cmd.return_url:
        raise errors.invalid("return_url", "is required")
    result = await authorize(
        commands.Authorize(
            request_id=cmd.request_id,
            branch=branch,
            owner_id=cmd.payer_id,
            amount_minor=cmd.amount_minor,
            currency=cmd.currency,
            method=Method.CHECKOUT,
            description=description,
            metadata=metadata,
            return_url=cmd.return_url,
            cancel_url=cmd.cancel_url,
            email=cmd.email,
            provider=cmd.provider,
        ),
        deps,
        actor=cmd.payer_id,
    )
    payment = result.payment
    assert payment is not None
    if payment.metadata.get(ledger.COINS_KEY) != str(coins):
        raise errors.invalid("amount", "differs from the checkout this request opened")
    return CoinCheckoutResult(payment, coins, fee, result.replayed)
