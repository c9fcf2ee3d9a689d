"""What every jobs use case works with: a unit of work, the configuration, the participants, a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from hirepay_platform.clock import utc_now
from jobs.service_layer.config import JobsConfig
from jobs.service_layer.ports import (
    CandidateCredits,
    CardRefunds,
    ConsistencySources,
    EscrowLedger,
    JobPayments,
    JobsUnitOfWork,
    OfferFundsByMethod,
    Participants,
)
from jobs.service_layer.posting.finished import CompletedPostings


@dataclass(frozen=True, slots=True)
class Deps:
    """The dependencies of a handler: `async def name(cmd, deps)`.

    `uow` is entered once per local transaction (a saga spans several); work driven concurrently
    (recovery drives several sagas at once) takes a unit of work of its own with `fresh()`."""

    uow: JobsUnitOfWork
    config: JobsConfig
    participants: Participants
    new_uow: Callable[[], JobsUnitOfWork]
    clock: Callable[[], datetime] = utc_now
    # The other services as the consistency auditor reads them (None where no auditor runs).
    sources: ConsistencySources | None = None
    candidate_credits: CandidateCredits | None = None  # the wallet, for paid candidate views
    offer_funds: OfferFundsByMethod | None = None  # payments and the wallet, for offers
    escrow: EscrowLedger | None = None  # the wallet, for the escrow's money steps
    card_refunds: CardRefunds | None = None  # payments, refunding card-funded engagements
    job_payments: JobPayments | None = None  # payments, direct job payment checkouts (ESC-5)
    # The postings this process completed moments ago (the process's one; None: none kept).
    completed: CompletedPostings | None = None

    @classmethod
    def build(
        cls,
        new_uow: Callable[[], JobsUnitOfWork],
        config: JobsConfig,
        participants: Participants,
        clock: Callable[[], datetime] = utc_now,
        sources: ConsistencySources | None = None,
        candidate_credits: CandidateCredits | None = None,
        offer_funds: OfferFundsByMethod | None = None,
        escrow: EscrowLedger | None = None,
        card_refunds: CardRefunds | None = None,
        job_payments: JobPayments | None = None,
        completed: CompletedPostings | None = None,
    ) -> Deps:
        """Dependencies with a new unit of work (one per request or worker tick)."""
        return cls(
            new_uow(),
            config,
            participants,
            new_uow,
            clock,
            sources=sources,
            candidate_credits=candidate_credits,
            offer_funds=offer_funds,
            escrow=escrow,
            card_refunds=card_refunds,
            job_payments=job_payments,
            completed=completed,
        )

    def fresh(self) -> Deps:
        """The same dependencies with a unit of work of their own."""
        return replace(self, uow=self.new_uow())
