"""A small world for the jobs unit tests: fakes wired as the service wires its ports."""

from __future__ import annotations

from datetime import datetime, timedelta

from jobs.domain import commands
from jobs.domain.model import JobFields
from jobs.domain.posting_saga import PaymentMethod, Saga, SagaError, SagaState
from jobs.service_layer.answers import SagaAnswer
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import pay_to_post, settlement
from tests.support.jobs_fakes import Clock, FakeParticipants, FakeUnitOfWork, Store, make_config
from tests.support.jobs_faults import CrashingParticipants, FaultyUnitOfWork

COMPANY = commands.Actor("co_1", "company")
FIELDS = JobFields(
    title="Senior Payments Engineer",
    description="Build the payment backbone of a job marketplace.",
    location="Remote",
    employment_type="full_time",
    category="engineering",
)


def declined_saga(saga_id: str, company_id: str, request_id: str, at: datetime) -> Saga:
    """A card posting of `company_id` that failed with a declined payment at `at` (what PAY-14's
    abuse rule counts)."""
    return Saga(
        id=saga_id,
        company_id=company_id,
        request_id=request_id,
        fingerprint="fp",
        actor=company_id,
        state=SagaState.FAILED,
        method=PaymentMethod.CARD,
        created_at=at,
        updated_at=at,
        deadline_at=at + timedelta(minutes=15),
        failure=SagaError("FAILED_PRECONDITION", "PAYMENT_DECLINED", "declined"),
    )


class Crash(BaseException):
    """Stands for the process dying at a saga step."""


class World:
    def __init__(self, refuse_activation_marker: str = "", **config) -> None:
        self.store = Store()
        self.clock = Clock()
        self.participants = FakeParticipants()
        # The saga step after which the "process" dies (faults wrap the ports, see jobs_faults).
        self.crash_at = ""
        self.refuse_activation_marker = refuse_activation_marker
        self.config = make_config(**config)

    def _crash(self) -> None:
        raise Crash(self.crash_at)

    def uow(self) -> FaultyUnitOfWork:
        return FaultyUnitOfWork(
            FakeUnitOfWork(self.store),
            crash_after=self.crash_at,
            crash=self._crash,
            refuse_activation_marker=self.refuse_activation_marker,
        )

    @property
    def deps(self) -> Deps:
        """Dependencies with a new unit of work, as each request or worker tick gets them."""
        participants = CrashingParticipants(self.participants, self.crash_at, self._crash)
        return Deps.build(self.uow, self.config, participants, clock=self.clock)

    @property
    def payments(self):
        return self.participants.payments

    @property
    def credits(self):
        return self.participants.credits

    async def post(self, key="key-1", method="card", **kw) -> SagaAnswer:
        cmd = commands.CreateJobWithPayment(
            request_id=key,
            actor=kw.pop("actor", COMPANY),
            payment=commands.PaymentChoice(
                method=method,
                payment_method_token=kw.pop("token", "pm_card_visa" if method == "card" else ""),
                expected_amount=kw.pop("expected", None),
            ),
            accept_terms=kw.pop("accept_terms", True),
            fingerprint=kw.pop("fingerprint", "fp-1"),
            fields=kw.pop("fields", None if "draft_id" in kw else FIELDS),
            **kw,
        )
        return await pay_to_post.create_job_with_payment(cmd, self.deps)

    def job(self, job_id: str):
        return self.store.jobs[job_id]

    def only_saga(self):
        (s,) = self.store.sagas.values()
        return s

    async def recover(self) -> int:
        return await settlement.recover_due(commands.RecoverSagas(), self.deps)
