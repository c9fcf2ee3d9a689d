"""A card payment's Try and Confirm on real PostgreSQL, counted in statements (issue 13): a first
Try is one statement of its own (its barrier row, payment and audit entry, written only if the
barrier row is new), recording the provider's answer is one more (the payment as the request
committed it, not read or locked again); a Try whose branch has its barrier row goes through the
barrier as before (replay, mismatch, Try after Cancel), and a payment that changed during the
provider call is recorded under its lock instead, nothing of the first attempt written. A first
Capture of an authorized payment is the payment's read and one statement of its own (its barrier
row, the capture requested and its audit entry, written only if the barrier row is new and the
payment row is still as read); a replayed Capture, a Capture whose Void came first or in between,
and a Capture of a payment in another state go the locked way and answer and write as before."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hirepay_platform.db import make_session_factory
from hirepay_platform.errors import HirepayError
from hirepay_platform.tcc import IdempotencyMismatch, TccBranch
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands, errors
from payments.domain.model import PaymentState
from payments.domain.provider import InvalidRequest, ProviderPayment
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.in_flight import InFlight
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import FakeProvider
from tests.support.payments_helpers import authorize_command

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))


class HookedProvider(FakeProvider):
    """The fake provider; `during_capture` runs while a capture call is at the provider."""

    def __init__(self) -> None:
        super().__init__()
        self._ids = _IDS
        self.during_capture: Callable[[], Awaitable[None]] | None = None

    async def capture(
        self, intent_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPayment:
        if self.during_capture is not None:
            await self.during_capture()
        return await super().capture(intent_id, amount_minor, idempotency_key)


class World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions: async_sessionmaker[AsyncSession] = make_session_factory(engine)
        self.provider = HookedProvider()
        self.in_flight = InFlight()
        self.statements: list[str] = []

    def deps(self) -> Deps:
        return Deps(
            SqlPaymentsUnitOfWork(self.sessions),
            ProviderRegistry([self.provider]),
            Policy(provider_timeout=1, poll_base=1, poll_max=4),
            in_flight=self.in_flight,
        )

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(" ".join(statement.split()))

    async def counted(self, work: Awaitable[Any]) -> Any:
        self.statements.clear()
        sa_event.listen(self.engine.sync_engine, "before_cursor_execute", self._count)
        try:
            return await work
        finally:
            sa_event.remove(self.engine.sync_engine, "before_cursor_execute", self._count)

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.sessions() as session:
            return await session.scalar(text(sql), params)


@pytest.fixture
def world(engine: AsyncEngine) -> World:
    return World(engine)


def _locking(statements: list[str]) -> list[str]:
    """Locked reads of their own (not a guard's lock inside a write statement)."""
    return [s for s in statements if s.startswith("SELECT") and "FOR UPDATE" in s]


async def test_recording_the_providers_answer_is_one_statement_of_its_own(world: World) -> None:
    gtx = f"gtx-{next(_IDS)}"
    result = await world.counted(handlers.authorize(authorize_command(gtx), world.deps()))
    assert result.payment.state is PaymentState.AUTHORIZED
    # The Try's barrier row with its payment and audit entry, one statement; then the answer
    # (payment, call record and transition entries) as one statement that locks and compares the
    # row itself. Each is a transaction of its own: no BEGIN or COMMIT round trips either.
    assert len(world.statements) == 2, world.statements
    assert not _locking(world.statements), world.statements
    assert world.statements[0].startswith("WITH guard AS (INSERT INTO tcc_barriers"), (
        world.statements
    )
    assert world.statements[1].startswith("WITH guard AS (SELECT payments.id"), world.statements

    capture = commands.Capture(f"c-{gtx}", TccBranch(gtx, "payment"), 0)
    done = await world.counted(handlers.capture(capture, world.deps()))
    assert done.payment.state is PaymentState.CAPTURED
    # The payment as this process's Try committed it (in_flight, no read): the Confirm's barrier
    # row, the capture requested and its audit entry as one statement of its own that locks and
    # compares the row itself; then the answer with the settlement event and the booking it
    # owes, one statement again: 2 round trips, not BEGIN, barrier, locked read, writes, COMMIT
    # and answer.
    assert len(world.statements) == 2, world.statements
    assert not _locking(world.statements), world.statements
    assert world.statements[0].startswith("WITH guard AS (INSERT INTO tcc_barriers"), (
        world.statements
    )
    assert "FOR UPDATE" in world.statements[0], world.statements
    assert "INSERT INTO outbox" in world.statements[-1]

    pid = done.payment.id
    assert (
        await world.scalar("SELECT state FROM payments WHERE id = :p", p=pid)
        == PaymentState.CAPTURED.value
    )
    assert (
        await world.scalar(
            "SELECT count(*) FROM outbox WHERE payment_id = :p AND type = 'payment.captured'",
            p=pid,
        )
        == 1
    )
    assert (
        await world.scalar("SELECT count(*) FROM credit_grants WHERE payment_id = :p", p=pid) == 1
    )
    transitions = await world.scalar(
        "SELECT string_agg(reason, ',' ORDER BY id) FROM audit_log"
        " WHERE payment_id = :p AND action = 'transition'",
        p=pid,
    )
    assert transitions == "UNKNOWN -> AUTHORIZED,AUTHORIZED -> CAPTURED"


async def test_a_capture_in_another_process_reads_the_payment_first(world: World) -> None:
    gtx = f"gtx-{next(_IDS)}"
    await handlers.authorize(authorize_command(gtx), world.deps())
    world.in_flight = InFlight()  # another replica: it did not record the Try
    capture = commands.Capture(f"c-{gtx}", TccBranch(gtx, "payment"), 0)
    done = await world.counted(handlers.capture(capture, world.deps()))
    assert done.payment.state is PaymentState.CAPTURED and not done.replayed
    # The payment read by its branch (no lock, no transaction), then the same two statements.
    assert len(world.statements) == 3, world.statements
    assert not _locking(world.statements), world.statements
    assert world.statements[0].startswith("SELECT payments.id"), world.statements
    assert world.statements[1].startswith("WITH guard AS (INSERT INTO tcc_barriers"), (
        world.statements
    )


async def test_a_capture_of_a_payment_changed_since_its_try_goes_the_locked_way(
    world: World,
) -> None:
    # The copy its Try kept is stale (here another replica's poller leased the row meanwhile):
    # the guarded statement writes nothing, the locked way captures once, as after a read.
    gtx, pid = await _authorized(world)
    async with world.sessions() as session:
        await session.execute(
            text("UPDATE payments SET next_poll_at = now() + interval '1 hour' WHERE id = :p"),
            {"p": pid},
        )
        await session.commit()
    done = await world.counted(handlers.capture(_capture(gtx), world.deps()))
    assert done.payment.state is PaymentState.CAPTURED and not done.replayed
    guarded = [s for s in world.statements if s.startswith("WITH guard AS (INSERT INTO tcc")]
    assert len(guarded) == 1, world.statements
    assert len(_locking(world.statements)) == 1, world.statements
    assert await _rows(world, gtx, pid) == _captured_once(gtx)
    assert _captures(world) == 1


async def test_a_try_whose_branch_has_its_barrier_row_goes_through_the_barrier(
    world: World,
) -> None:
    gtx = f"gtx-{next(_IDS)}"
    first = await handlers.authorize(authorize_command(gtx), world.deps())
    again = await world.counted(handlers.authorize(authorize_command(gtx), world.deps()))
    assert again.replayed and again.payment.id == first.payment.id
    assert world.statements[0].startswith(
        "WITH guard AS (INSERT INTO tcc_barriers"
    )  # wrote nothing
    with pytest.raises(IdempotencyMismatch):
        await handlers.authorize(replace(authorize_command(gtx), amount_minor=2600), world.deps())
    assert await world.scalar("SELECT count(*) FROM payments WHERE global_tx_id = :g", g=gtx) == 1
    attempts = "SELECT count(*) FROM audit_log WHERE payment_id = :p AND action = 'attempt'"
    assert await world.scalar(attempts, p=first.payment.id) == 1

    late = f"gtx-{next(_IDS)}"  # the saga cancelled before its Try arrived
    void = commands.Void(f"v-{late}", TccBranch(late, "payment"), "saga cancelled")
    assert (await handlers.void(void, world.deps())).null_compensation
    with pytest.raises(errors.PaymentVoided):
        await handlers.authorize(authorize_command(late), world.deps())
    assert await world.scalar("SELECT count(*) FROM payments WHERE global_tx_id = :g", g=late) == 0


async def test_a_payment_changed_during_the_call_is_recorded_under_its_lock(
    world: World,
) -> None:
    gtx = f"gtx-{next(_IDS)}"
    authorized = (await handlers.authorize(authorize_command(gtx), world.deps())).payment
    assert authorized is not None

    async def meanwhile() -> None:
        # Another transaction changes the row while the capture is at the provider (a column the
        # capture's own answer does not set).
        async with world.sessions() as session, session.begin():
            await session.execute(
                text("UPDATE payments SET void_reason = 'changed meanwhile' WHERE id = :p"),
                {"p": authorized.id},
            )

    world.provider.during_capture = meanwhile
    capture = commands.Capture(f"c-{gtx}", TccBranch(gtx, "payment"), 0)
    done = await world.counted(handlers.capture(capture, world.deps()))
    assert done.payment.state is PaymentState.CAPTURED
    assert done.payment.void_reason == "changed meanwhile"  # read under the lock, kept
    # The guarded statement applied nothing; then the row was read under its lock and written.
    assert world.statements[-3].startswith("WITH guard AS (SELECT payments.id"), world.statements
    assert _locking(world.statements[-2:-1]), world.statements
    pid = authorized.id
    row = {
        "state": await world.scalar("SELECT state FROM payments WHERE id = :p", p=pid),
        "reason": await world.scalar("SELECT void_reason FROM payments WHERE id = :p", p=pid),
    }
    assert row == {"state": "CAPTURED", "reason": "changed meanwhile"}
    for sql, expected in (
        ("SELECT count(*) FROM outbox WHERE payment_id = :p AND type = 'payment.captured'", 1),
        ("SELECT count(*) FROM credit_grants WHERE payment_id = :p", 1),
        (
            "SELECT count(*) FROM audit_log WHERE payment_id = :p AND action = 'transition'"
            " AND reason = 'AUTHORIZED -> CAPTURED'",
            1,
        ),
    ):
        assert await world.scalar(sql, p=pid) == expected, sql


class CommitsAfter(SqlPaymentsUnitOfWork):
    """A unit of work that lets `meanwhile` (another request) run once, just before its first
    commit: for a first Capture, between its read of the payment and its guarded statement."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], meanwhile: Any) -> None:
        super().__init__(sessions)
        self.meanwhile: Callable[[], Awaitable[Any]] | None = meanwhile

    async def commit(self) -> None:
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            await meanwhile()
        await super().commit()


async def _authorized(world: World) -> tuple[str, str]:
    gtx = f"gtx-{next(_IDS)}"
    payment = (await handlers.authorize(authorize_command(gtx), world.deps())).payment
    assert payment is not None and payment.state is PaymentState.AUTHORIZED
    return gtx, payment.id


def _capture(gtx: str, amount_minor: int = 0) -> commands.Capture:
    return commands.Capture(f"c-{gtx}", TccBranch(gtx, "payment"), amount_minor)


async def _rows(world: World, gtx: str, pid: str) -> dict[str, Any]:
    """What a Capture may have written: the payment's money and state, its Confirm barrier row,
    capture attempts, settlement events and the bookings owed."""
    payment = "SELECT {} FROM payments WHERE id = :p"
    return {
        "state": await world.scalar(payment.format("state"), p=pid),
        "pending_op": await world.scalar(payment.format("pending_op"), p=pid),
        "captured_minor": await world.scalar(payment.format("captured_minor"), p=pid),
        "capture_key": await world.scalar(payment.format("capture_key"), p=pid),
        "confirm_rows": await world.scalar(
            "SELECT count(*) FROM tcc_barriers WHERE global_tx_id = :g AND op = 'confirm'", g=gtx
        ),
        "capture_attempts": await world.scalar(
            "SELECT count(*) FROM audit_log WHERE payment_id = :p AND action = 'attempt'"
            " AND reason = 'capture requested'",
            p=pid,
        ),
        "captured_events": await world.scalar(
            "SELECT count(*) FROM outbox WHERE payment_id = :p AND type = 'payment.captured'",
            p=pid,
        ),
        "grants": await world.scalar(
            "SELECT count(*) FROM credit_grants WHERE payment_id = :p", p=pid
        ),
    }


def _captured_once(gtx: str) -> dict[str, Any]:
    """What `_rows` holds once the branch's payment was captured in full, once."""
    return {
        "state": "CAPTURED",
        "pending_op": None,
        "captured_minor": 2500,
        "capture_key": f"{gtx}:payment:capture",
        "confirm_rows": 1,
        "capture_attempts": 1,
        "captured_events": 1,
        "grants": 1,
    }


def _captures(world: World) -> int:
    return sum(1 for op, _ in world.provider.calls if op == "capture")


async def test_a_replayed_capture_goes_the_locked_way_and_writes_nothing(world: World) -> None:
    gtx, pid = await _authorized(world)
    first = await handlers.capture(_capture(gtx), world.deps())
    assert first.payment.state is PaymentState.CAPTURED and not first.replayed
    after_first = await _rows(world, gtx, pid)
    assert after_first == _captured_once(gtx)

    again = await world.counted(handlers.capture(_capture(gtx), world.deps()))
    assert again.replayed and again.payment.state is PaymentState.CAPTURED
    # Read, not capturable: the barrier's insert-first (a replay) and the payment's read.
    assert world.statements[1].startswith("INSERT INTO tcc_barriers"), world.statements
    with pytest.raises(IdempotencyMismatch):
        await handlers.capture(_capture(gtx, 2000), world.deps())
    assert await _rows(world, gtx, pid) == after_first
    assert _captures(world) == 1


async def test_a_replayed_capture_of_a_payment_still_authorized_is_not_sent_again(
    world: World,
) -> None:
    # The provider refused the first capture: the payment is still AUTHORIZED, as the fast path
    # would want it, but the branch has its Confirm row: only the barrier's answer applies.
    gtx, pid = await _authorized(world)
    world.provider.script = [InvalidRequest("cannot capture", code="amount_too_large")]
    with pytest.raises(errors.PaymentNotCapturable):
        await handlers.capture(_capture(gtx), world.deps())
    refused = await _rows(world, gtx, pid)
    assert refused["state"] == "AUTHORIZED" and refused["confirm_rows"] == 1, refused
    assert refused["capture_attempts"] == 1 and refused["captured_minor"] == 0, refused
    calls = _captures(world)

    with pytest.raises(errors.PaymentNotCapturable):
        await world.counted(handlers.capture(_capture(gtx), world.deps()))
    # The guarded statement found the barrier row and wrote nothing; then the locked way.
    assert world.statements[1].startswith("WITH guard AS (INSERT INTO tcc_barriers")
    assert world.statements[2].startswith("INSERT INTO tcc_barriers"), world.statements
    assert await _rows(world, gtx, pid) == refused
    assert _captures(world) == calls


async def test_a_capture_whose_void_commits_in_between_is_refused_writing_nothing(
    world: World,
) -> None:
    gtx, pid = await _authorized(world)
    void = commands.Void(f"v-{gtx}", TccBranch(gtx, "payment"), "saga cancelled")

    async def voided() -> None:
        assert (await handlers.void(void, world.deps())).payment is not None

    deps = replace(world.deps(), uow=CommitsAfter(world.sessions, voided))
    with pytest.raises(errors.PaymentVoided):
        await world.counted(handlers.capture(_capture(gtx), deps))
    # The guarded statement saw the payment changed since its read and wrote nothing (not even
    # the barrier row); the locked way then refused the Confirm, as it always has.
    guarded = [s for s in world.statements if s.startswith("WITH guard AS (INSERT INTO tcc")]
    assert len(guarded) == 1, world.statements
    assert await _rows(world, gtx, pid) == {
        "state": "VOIDED",
        "pending_op": None,
        "captured_minor": 0,
        "capture_key": "",
        "confirm_rows": 0,
        "capture_attempts": 0,
        "captured_events": 0,
        "grants": 0,
    }
    assert _captures(world) == 0
    # A Confirm after its Cancel (sequential): the same answer, nothing written either.
    with pytest.raises(errors.PaymentVoided):
        await handlers.capture(_capture(gtx), world.deps())
    assert (await _rows(world, gtx, pid))["confirm_rows"] == 0


async def test_a_capture_racing_a_void_ends_consistent(world: World) -> None:
    # Run at once, either may go first (each interleaving happens in a few rounds: Void first,
    # Capture first and Void refused, Capture first and the Void's refund owed).
    for _ in range(6):
        gtx, pid = await _authorized(world)
        void = commands.Void(f"v-{gtx}", TccBranch(gtx, "payment"), "saga cancelled")
        captured, voided = await asyncio.gather(
            handlers.capture(_capture(gtx), world.deps()),
            handlers.void(void, world.deps()),
            return_exceptions=True,
        )
        rows = await _rows(world, gtx, pid)
        refunded = await world.scalar("SELECT refunded_minor FROM payments WHERE id = :p", p=pid)
        if isinstance(captured, BaseException):
            # The Void first: the Confirm wrote nothing and moved no money.
            assert isinstance(captured, errors.PaymentVoided), captured
            assert not isinstance(voided, BaseException), voided
            assert rows["state"] == "VOIDED" and rows["captured_minor"] == 0, rows
            assert rows["confirm_rows"] == rows["capture_attempts"] == rows["grants"] == 0, rows
            assert _captures(world) == 0
        else:
            # The Confirm first: captured once; a Void after it refunds or is refused.
            if isinstance(voided, BaseException):
                assert isinstance(voided, errors.PaymentNotVoidable), voided
            assert rows["captured_minor"] == 2500, rows
            assert rows["confirm_rows"] == rows["capture_attempts"] == 1, rows
            assert rows["captured_events"] == rows["grants"] == 1, rows
        # The money the provider took is the payment's; a Void after it owes all of it back.
        intent = world.provider.intents[
            await world.scalar("SELECT provider_payment_id FROM payments WHERE id = :p", p=pid)
        ]
        assert intent.amount_received == rows["captured_minor"], (intent, rows)
        assert refunded in (0, rows["captured_minor"]), (refunded, rows)
        world.provider.calls.clear()


async def test_a_capture_of_a_payment_in_another_state_writes_nothing(world: World) -> None:
    gtx, pid = await _authorized(world)
    before = await _rows(world, gtx, pid)
    with pytest.raises(errors.PaymentNotCapturable):
        await world.counted(handlers.capture(_capture(gtx, 2600), world.deps()))  # > authorized
    # Not capturable as read: no guarded statement, the locked way (barrier, locked read) refuses.
    assert not [s for s in world.statements if s.startswith("WITH guard")], world.statements
    assert len(_locking(world.statements)) == 1, world.statements
    assert await _rows(world, gtx, pid) == before
    assert before["confirm_rows"] == 0

    declined = f"gtx-{next(_IDS)}"
    with pytest.raises(HirepayError):
        await handlers.authorize(
            replace(authorize_command(declined), payment_method_token="pm_card_chargeDeclined"),
            world.deps(),
        )
    failed = await world.scalar("SELECT id FROM payments WHERE global_tx_id = :g", g=declined)
    with pytest.raises(errors.PaymentNotCapturable):
        await handlers.capture(_capture(declined), world.deps())
    rows = await _rows(world, declined, failed)
    assert rows["state"] == "FAILED" and rows["confirm_rows"] == 0, rows
    assert rows["capture_attempts"] == rows["captured_minor"] == rows["grants"] == 0, rows

    missing = f"gtx-{next(_IDS)}"
    with pytest.raises(errors.PaymentNotFound):
        await handlers.capture(_capture(missing), world.deps())
    assert (
        await world.scalar("SELECT count(*) FROM tcc_barriers WHERE global_tx_id = :g", g=missing)
        == 0
    )
    assert _captures(world) == 0
