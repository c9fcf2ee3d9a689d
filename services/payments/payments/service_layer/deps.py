"""What every payments handler gets besides its command: the unit of work, the providers, the
configuration, the clock and the wallet's ledger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from hirepay_platform.clock import utc_now
from payments.service_layer.config import Policy
from payments.service_layer.in_flight import InFlight
from payments.service_layer.ports import CreditsLedger, PaymentsUnitOfWork, PayoutLedger
from payments.service_layer.providers import ProviderRegistry


@dataclass
class Deps:
    """The use cases' ports: a unit of work (entered once per local transaction), the registry of
    providers, the configuration, the clock and the wallet's ledger (plan credits, withdrawals;
    None: not wired)."""

    uow: PaymentsUnitOfWork
    providers: ProviderRegistry
    config: Policy = field(default_factory=Policy)
    clock: Callable[[], datetime] = utc_now
    ledger: CreditsLedger | None = None
    payout_ledger: PayoutLedger | None = None
    # Shared by every Deps of the process (one per request): the provider work under way here.
    in_flight: InFlight = field(default_factory=InFlight)
