"""The registry of payment providers: each payment goes through the provider that made it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from payments.domain import errors
from payments.domain.provider import OutcomeUnknown, PaymentProvider, PayoutProvider

# The provider that pays users out (ESC-9) when none is named: Stripe Connect.
DEFAULT_PAYOUT_PROVIDER = "stripe"


class ProviderRegistry:
    """The configured providers by name, and the default one for new payments.

    A payment, refund or checkout always goes through `get(payment.provider)`, never the default:
    the default only chooses the provider of a new payment, so changing it (or restarting) never
    moves an existing payment to another provider."""

    def __init__(self, providers: Iterable[PaymentProvider], default: str = "") -> None:
        self._providers = {p.name: p for p in providers}
        # Those that can also pay users out (accounts, transfers, payouts).
        self._payouts = {
            name: cast(PayoutProvider, p)
            for name, p in self._providers.items()
            if callable(getattr(p, "create_payout_account", None))
        }
        if not self._providers:
            raise ValueError("at least one payment provider must be configured")
        self._default = default or next(iter(self._providers))
        if self._default not in self._providers:
            raise ValueError(f"the default provider {self._default} is not configured")

    @property
    def names(self) -> list[str]:
        return sorted(self._providers)

    @property
    def default(self) -> PaymentProvider:
        return self._providers[self._default]

    def get(self, name: str) -> PaymentProvider:
        """The provider called `name` (case-insensitive); PROVIDER_NOT_AVAILABLE otherwise."""
        provider = self._providers.get((name or "").lower())
        if provider is None:
            raise errors.ProviderNotAvailable(name, self.names)
        return provider

    def for_new(self, name: str = "") -> PaymentProvider:
        """The provider of a new payment: the one asked for, else the default."""
        return self.get(name) if name else self.default

    def of_existing(self, name: str) -> PaymentProvider:
        """The provider an existing payment was made with. One that is no longer configured is
        an unknown outcome for now (polled again later), never a crash of the worker."""
        provider = self._providers.get(name.lower())
        if provider is None:
            raise OutcomeUnknown(f"provider {name} is not configured here", timeout=False)
        return provider

    def payouts(self, name: str = DEFAULT_PAYOUT_PROVIDER) -> PayoutProvider:
        """The provider that pays users out; PROVIDER_NOT_AVAILABLE when it is not configured."""
        provider = self._payouts.get((name or "").lower())
        if provider is None:
            raise errors.ProviderNotAvailable(name, sorted(self._payouts))
        return provider
