"""What every wallet handler gets besides its command: units of work, configuration and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from hirepay_platform.clock import utc_now
from wallet.service_layer.config import WalletConfig
from wallet.service_layer.ports import WalletUnitOfWork


@dataclass(frozen=True, slots=True)
class Deps:
    """The handlers' dependencies, built once at start-up (entrypoints/main.py) or by a test.

    `uow` makes a fresh unit of work: one per local transaction, so concurrent calls never share a
    session (`async with deps.uow() as uow: ...`).
    """

    uow: Callable[[], WalletUnitOfWork]
    config: WalletConfig = field(default_factory=WalletConfig)
    clock: Callable[[], datetime] = utc_now
