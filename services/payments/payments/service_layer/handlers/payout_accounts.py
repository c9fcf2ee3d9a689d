"""Payout accounts (ESC-9): a contractor's account at the payout provider (a Stripe Connect
account), opened once per user; with real Stripe it needs the provider's onboarding (a fresh,
single-use link), the sandbox's accounts are ready at once. Provider calls never run inside a
database transaction."""

from __future__ import annotations

from typing import Any

from hirepay_platform.errors import HirepayError
from payments.domain import commands, errors
from payments.domain.payouts import PayoutAccount, PayoutAccountState
from payments.domain.provider import (
    InvalidRequest,
    OutcomeUnknown,
    PayoutAccountRequest,
    ProviderFailure,
)
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.provider_calls import CallRecord, call


def _provider_error(exc: ProviderFailure) -> HirepayError:
    """A provider failure of an account call, as the caller's error."""
    if isinstance(exc, InvalidRequest):
        return errors.invalid(exc.param or "payout_account", exc.message)
    return errors.ProviderUnavailable(f"the payout provider is unavailable: {exc.message}")


async def _call(operation: str, key: str, fn: Any) -> Any:
    """One provider call with its latency metric (the records are not kept: no payment id)."""
    records: list[CallRecord] = []
    return await call(records, operation, key, fn)


# --- payout accounts ----------------------------------------------------------------------


def _account_request(cmd: commands.CreatePayoutAccount, deps: Deps) -> PayoutAccountRequest:
    config = deps.config
    country = (cmd.country or config.payout_country).upper()
    if len(country) != 2 or not country.isalpha():
        raise errors.invalid("country", "must be an ISO 3166-1 alpha-2 code")
    if len(cmd.email) > 320:
        raise errors.invalid("email", "is too long")
    return PayoutAccountRequest(
        user_id=cmd.user_id,
        email=cmd.email,
        country=country,
        return_url=config.payout_return_url,
        refresh_url=config.payout_refresh_url,
    )


async def create_payout_account(cmd: commands.CreatePayoutAccount, deps: Deps) -> PayoutAccount:
    """The user's payout account, opened at the provider on the first call (one per user)."""
    if not cmd.user_id:
        raise errors.invalid("user_id", "is required")
    request = _account_request(cmd, deps)
    async with deps.uow as uow:
        existing = await uow.payouts.get_account(cmd.user_id)
    if existing is not None:
        return await refreshed(existing, deps, request)
    provider = deps.providers.payouts()
    try:
        opened = await _call(
            "create_payout_account",
            f"payout-account:{cmd.user_id}",
            lambda: provider.create_payout_account(request, f"payout-account:{cmd.user_id}"),
        )
        url = "" if opened.payouts_enabled else await provider.onboarding_link(opened.id, request)
    except (InvalidRequest, OutcomeUnknown) as exc:
        raise _provider_error(exc) from None
    now = deps.clock()
    account = PayoutAccount(
        user_id=cmd.user_id,
        provider=provider.name,
        provider_account_id=opened.id,
        state=PayoutAccountState.ONBOARDING,
        onboarding_url=url,
        created_at=now,
        updated_at=now,
    )
    account.refresh(opened.payouts_enabled, now)
    async with deps.uow as uow:
        if not await uow.payouts.add_account(account):  # a concurrent twin recorded it first
            stored = await uow.payouts.get_account(cmd.user_id)
            assert stored is not None
            return stored
        await uow.commit()
    return account


async def refreshed(
    account: PayoutAccount, deps: Deps, request: PayoutAccountRequest | None = None
) -> PayoutAccount:
    """An account still onboarding, with the provider's current word (and, when asked, a fresh
    onboarding link: the provider's links are single-use and short-lived)."""
    if account.state is PayoutAccountState.ACTIVE:
        return account
    provider = deps.providers.payouts(account.provider)
    try:
        current = await provider.retrieve_payout_account(account.provider_account_id)
        url = account.onboarding_url
        if not current.payouts_enabled and request is not None:
            url = await provider.onboarding_link(account.provider_account_id, request)
    except (InvalidRequest, OutcomeUnknown) as exc:
        if request is not None:
            raise _provider_error(exc) from None
        return account  # a read answers what we know
    async with deps.uow as uow:
        stored = await uow.payouts.get_account(account.user_id, for_update=True)
        assert stored is not None
        changed = stored.refresh(current.payouts_enabled, deps.clock())
        if url != stored.onboarding_url:
            stored.onboarding_url, changed = url, True
        if changed:
            await uow.payouts.save_account(stored)
            await uow.commit()
    return stored


async def get_payout_account(user_id: str, deps: Deps) -> PayoutAccount:
    async with deps.uow as uow:
        account = await uow.payouts.get_account(user_id)
    if account is None:
        raise errors.NoPayoutAccount(user_id)
    return await refreshed(account, deps)
