"""Model-based test: random sequences of transfers, splits, holds, partial confirms, cancels,
expiries and repeated requests against the real service layer and PostgreSQL, checked after every
step against a simple model and the ledger audit.

Hypothesis drives a synchronous state machine; each step hands its coroutine to a dedicated event
loop that runs all the time in its own thread and owns the engine (asyncpg connections belong to
the loop that opened them, and their background work must keep running between steps).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.errors import HirepayError
from hirepay_platform.tcc import TccBranch
from wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from wallet.domain import commands as c
from wallet.domain.holds import HoldState
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h
from wallet.service_layer.deps import Deps

T = TypeVar("T")

USERS = ("u0", "u1", "u2")
# Accounts that may not go negative, between which money moves. The revenue account is sharded:
# debiting it takes the locked slow path.
SPENDERS = (*USERS, "escrow", "revenue")
RECEIVERS = (*USERS, "escrow", "revenue")


@dataclass
class ModelHold:
    """What the model expects of one branch."""

    reserve: c.ReserveHold
    state: HoldState | None  # None: the Try failed (or never ran) and nothing is held
    expires_at: datetime | None = None
    confirmed: int = 0
    confirm: c.ConfirmHold | None = None
    cancelled: bool = False  # a Cancel was recorded (with or without a hold)
    null_compensation: bool = False


class WalletMachine(RuleBasedStateMachine):
    loop: ClassVar[asyncio.AbstractEventLoop]
    engine: ClassVar[AsyncEngine]
    audit: ClassVar[Any]

    transfers = Bundle("transfers")
    branches = Bundle("branches")

    def __init__(self) -> None:
        super().__init__()
        self.sessions = make_session_factory(self.engine)
        self.now = datetime.now(UTC)
        self.tag = uuid.uuid4().hex[:10]
        self.ids: dict[str, str] = {}
        self.posted: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        self.sent: dict[str, Any] = {}  # transfer id -> (command, first result)
        self.holds: dict[TccBranch, ModelHold] = {}
        self.counter = 0

    # --- plumbing ----------------------------------------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def deps(self) -> Deps:
        return Deps(uow=lambda: SqlWalletUnitOfWork(self.sessions), clock=lambda: self.now)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T | str:
        """Run a handler; a domain error comes back as its reason."""
        try:
            return self.run(coroutine)
        except HirepayError as exc:
            return exc.reason

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.tag}-{self.counter}"

    def available(self, name: str) -> int:
        return self.posted[name] - self.pending[name]

    def move(self, name: str, amount: int) -> None:
        self.posted[name] += amount

    # --- set-up ------------------------------------------------------------------------------

    @initialize()
    def open_accounts(self) -> None:
        kinds = {
            "clearing": (AccountKind.PROVIDER_CLEARING, True),
            "revenue": (AccountKind.PLATFORM_REVENUE, False),
            "escrow": (AccountKind.ESCROW, False),
            **{u: (AccountKind.USER, False) for u in USERS},
        }
        for name, (kind, negative) in kinds.items():
            cmd = c.OpenAccount(f"{name}-{self.tag}", "USD", kind, negative)
            self.ids[name] = self.run(h.open_account(cmd, self.deps())).account.id
            self.posted[name] = self.pending[name] = 0
        for user in USERS:  # start with money, so early steps reserve and spend
            self.fund(user, 5000)

    # --- transfers ---------------------------------------------------------------------------

    @rule(user=st.sampled_from(USERS), amount=st.integers(1, 5000))
    def fund(self, user: str, amount: int) -> None:
        leg = Leg(self.ids["clearing"], self.ids[user], amount, "USD")
        result = self.call(h.transfer(c.Transfer(self.next_id("fund"), (leg,)), self.deps()))
        assert not isinstance(result, str), result
        self.move("clearing", -amount)
        self.move(user, amount)

    @rule(
        target=transfers,
        src=st.sampled_from(SPENDERS),
        dst=st.sampled_from(RECEIVERS),
        amount=st.integers(1, 3000),
    )
    def transfer(self, src: str, dst: str, amount: int):
        if src == dst:
            return multiple()
        cmd = c.Transfer(
            self.next_id("t"), (Leg(self.ids[src], self.ids[dst], amount, "USD"),), "move"
        )
        result = self.call(h.transfer(cmd, self.deps()))
        if self.available(src) < amount:
            assert result == "INSUFFICIENT_FUNDS"
            return multiple()
        assert not isinstance(result, str), result
        self.move(src, -amount)
        self.move(dst, amount)
        self.sent[cmd.transfer_id] = (cmd, result)
        return cmd.transfer_id

    @rule(
        target=transfers,
        src=st.sampled_from((*USERS, "escrow")),
        dst=st.sampled_from(USERS),
        total=st.integers(1, 3000),
        fee_bp=st.integers(1, 9999),
        remainder_to_fee=st.booleans(),
    )
    def split(self, src: str, dst: str, total: int, fee_bp: int, remainder_to_fee: bool):
        if src == dst:
            return multiple()
        revenue, payee = self.ids["revenue"], self.ids[dst]
        cmd = c.SplitTransfer(
            self.next_id("s"),
            self.ids[src],
            total,
            "USD",
            (Share(revenue, fee_bp), Share(payee, 10_000 - fee_bp)),
            revenue if remainder_to_fee else payee,
        )
        result = self.call(h.split_transfer(cmd, self.deps()))
        if self.available(src) < total:
            assert result == "INSUFFICIENT_FUNDS"
            return multiple()
        assert not isinstance(result, str), result
        fee, rest = total * fee_bp // 10_000, total * (10_000 - fee_bp) // 10_000
        left = total - fee - rest
        fee, rest = (fee + left, rest) if remainder_to_fee else (fee, rest + left)
        self.move(src, -total)
        self.move("revenue", fee)
        self.move(dst, rest)
        self.sent[cmd.transfer_id] = (cmd, result)
        return cmd.transfer_id

    @rule(transfer_id=transfers)
    def repeat_transfer(self, transfer_id: str) -> None:
        cmd, first = self.sent[transfer_id]
        handler = h.transfer if isinstance(cmd, c.Transfer) else h.split_transfer
        again = self.call(handler(cmd, self.deps()))
        assert not isinstance(again, str), again
        assert again.replayed and again.transfer == first.transfer

    @rule(transfer_id=transfers)
    def reuse_transfer_id_differently(self, transfer_id: str) -> None:
        changed = c.Transfer(
            transfer_id, (Leg(self.ids["u0"], self.ids["u1"], 1, "USD"),), "a different request"
        )
        result = self.call(h.transfer(changed, self.deps()))
        assert result == "IDEMPOTENCY_MISMATCH"

    # --- holds -------------------------------------------------------------------------------

    @rule(
        target=branches,
        src=st.sampled_from(SPENDERS),
        dst=st.sampled_from(RECEIVERS),
        amount=st.integers(1, 1500),
        ttl=st.integers(1, 600),
    )
    def reserve(self, src: str, dst: str, amount: int, ttl: int):
        if src == dst:
            return multiple()
        branch = TccBranch(self.next_id("g"), "b")
        cmd = c.ReserveHold(branch, self.ids[src], self.ids[dst], amount, "USD", ttl)
        self.holds[branch] = ModelHold(cmd, None)
        self._try(branch)
        return branch

    def _try(self, branch: TccBranch) -> None:
        model = self.holds[branch]
        src = self._name(model.reserve.account_id)
        result = self.call(h.reserve_hold(model.reserve, self.deps()))
        if model.null_compensation:
            assert result == "HOLD_CANCELLED"  # a Try after its Cancel reserves nothing
        elif model.state is not None:
            assert not isinstance(result, str), result
            assert result.replayed and result.hold.state is model.state
        elif self.available(src) < model.reserve.amount:
            assert result == "INSUFFICIENT_FUNDS"
        else:
            assert not isinstance(result, str), result
            assert not result.replayed and result.hold.state is HoldState.PENDING
            model.state = HoldState.PENDING
            model.expires_at = result.hold.expires_at
            self.pending[src] += model.reserve.amount

    @rule(branch=branches)
    def repeat_reserve(self, branch: TccBranch) -> None:
        self._try(branch)

    def _pending(self) -> list[TccBranch]:
        return [b for b, m in self.holds.items() if m.state is HoldState.PENDING]

    @precondition(lambda self: self._pending())
    @rule(
        data=st.data(),
        fraction=st.sampled_from([0, 1, 2, 3]),
        split=st.booleans(),
        fee_bp=st.integers(1, 9999),
    )
    def confirm_pending(self, data: st.DataObject, fraction: int, split: bool, fee_bp: int) -> None:
        """Most branches drawn at random are resolved already; aim at the live ones too."""
        self.confirm(data.draw(st.sampled_from(self._pending())), fraction, split, fee_bp)

    @precondition(lambda self: self._pending())
    @rule(data=st.data())
    def cancel_pending(self, data: st.DataObject) -> None:
        self.cancel(data.draw(st.sampled_from(self._pending())))

    @rule(
        branch=branches,
        fraction=st.sampled_from([0, 1, 2, 3]),
        split=st.booleans(),
        fee_bp=st.integers(1, 9999),
    )
    def confirm(self, branch: TccBranch, fraction: int, split: bool, fee_bp: int) -> None:
        model = self.holds[branch]
        held = model.reserve.amount
        amount = 0 if fraction == 0 else max(1, held * fraction // 4)
        dst = model.reserve.destination_account_id
        shares: tuple[Share, ...] = ()
        remainder = ""
        if split and "revenue" not in (self._name(dst), self._name(model.reserve.account_id)):
            shares = (Share(self.ids["revenue"], fee_bp), Share(dst, 10_000 - fee_bp))
            remainder = dst
        cmd = c.ConfirmHold(branch, amount, shares, remainder)
        result = self.call(h.confirm_hold(cmd, self.deps()))
        if model.confirm is not None:
            if cmd == model.confirm:
                assert not isinstance(result, str) and result.replayed
            else:
                assert result == "IDEMPOTENCY_MISMATCH"
            return
        if model.state is None:
            assert result == ("HOLD_CANCELLED" if model.null_compensation else "HOLD_NOT_FOUND")
            return
        if model.state is not HoldState.PENDING:
            assert result == "HOLD_ALREADY_RESOLVED"
            return
        assert model.expires_at is not None
        if self.now >= model.expires_at:
            assert result == "HOLD_EXPIRED"
            return
        assert not isinstance(result, str), result
        posted = amount or held
        assert (result.hold.state, result.hold.confirmed_amount) == (HoldState.CONFIRMED, posted)
        src = self._name(model.reserve.account_id)
        self.pending[src] -= held
        self.move(src, -posted)
        if shares:
            fee, rest = posted * fee_bp // 10_000, posted * (10_000 - fee_bp) // 10_000
            self.move("revenue", fee)
            self.move(self._name(dst), rest + (posted - fee - rest))
        else:
            self.move(self._name(dst), posted)
        model.state, model.confirmed, model.confirm = HoldState.CONFIRMED, posted, cmd

    @rule(branch=branches)
    def cancel(self, branch: TccBranch) -> None:
        model = self.holds[branch]
        result = self.call(h.cancel_hold(c.CancelHold(branch, "test"), self.deps()))
        if model.cancelled:
            assert not isinstance(result, str) and result.replayed
            assert result.null_compensation == model.null_compensation
            return
        if model.state is None:
            assert not isinstance(result, str) and result.null_compensation
            model.cancelled = model.null_compensation = True
            return
        if model.state is HoldState.CONFIRMED:
            assert result == "HOLD_ALREADY_RESOLVED"
            return
        assert not isinstance(result, str), result
        model.cancelled = True
        if model.state is HoldState.PENDING:
            assert result.hold.state is HoldState.CANCELLED
            self.pending[self._name(model.reserve.account_id)] -= model.reserve.amount
            model.state = HoldState.CANCELLED
        else:
            assert result.hold.state is model.state is HoldState.EXPIRED

    @rule(target=branches, src=st.sampled_from(USERS), amount=st.integers(1, 3000))
    def cancel_before_try(self, src: str, amount: int):
        branch = TccBranch(self.next_id("g"), "b")
        reserve = c.ReserveHold(branch, self.ids[src], self.ids["escrow"], amount, "USD", 60)
        self.holds[branch] = ModelHold(reserve, None)
        self.cancel(branch)
        return branch

    @rule(seconds=st.integers(1, 120))
    def advance_clock(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def expire(self) -> None:
        while self.run(h.release_expired_holds(c.ReleaseExpiredHolds(batch_size=5), self.deps())):
            pass
        for model in self.holds.values():
            if model.state is HoldState.PENDING and model.expires_at <= self.now:
                model.state = HoldState.EXPIRED
                self.pending[self._name(model.reserve.account_id)] -= model.reserve.amount

    def _name(self, account_id: str) -> str:
        return next(name for name, i in self.ids.items() if i == account_id)

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def ledger_is_sound_and_matches_the_model(self) -> None:
        if not self.ids:
            return
        assert self.run(self.audit(self.engine)) == {}
        rows = self.run(self._balances())
        for name, account_id in self.ids.items():
            posted, pending = rows[account_id]
            assert (posted, pending) == (self.posted[name], self.pending[name]), name
            if name != "clearing":
                assert posted - pending >= 0, name
        states = self.run(self._hold_states())
        for branch, model in self.holds.items():
            stored = states.get((branch.global_tx_id, branch.branch_id))
            if model.state is None:
                assert stored is None
            else:
                assert stored == (model.state.value, model.confirmed), branch

    async def _balances(self) -> dict[str, tuple[int, int]]:
        async with self.engine.connect() as db:
            rows = await db.execute(
                text(
                    "SELECT CAST(a.id AS text), a.pending, a.posted + coalesce((SELECT sum(posted)"
                    " FROM account_shards s WHERE s.account_id = a.id), 0)"
                    " FROM accounts a WHERE a.id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": list(self.ids.values())},
            )
            return {i: (int(posted), pending) for i, pending, posted in rows}

    async def _hold_states(self) -> dict[tuple[str, str], tuple[str, int]]:
        async with self.engine.connect() as db:
            rows = await db.execute(
                text(
                    "SELECT global_tx_id, branch_id, state, confirmed_amount FROM holds"
                    " WHERE global_tx_id LIKE :tag"
                ),
                {"tag": f"g-{self.tag}-%"},
            )
            return {(g, b): (s, n) for g, b, s, n in rows}


@pytest.fixture(scope="module")
def loop_and_engine(wallet_db_url: str):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="state-machine-loop", daemon=True)
    thread.start()
    engine = create_engine(wallet_db_url, pool_size=5, max_overflow=0)
    yield loop, engine
    asyncio.run_coroutine_threadsafe(engine.dispose(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def test_wallet_behaves_like_its_model(loop_and_engine, audit) -> None:
    WalletMachine.loop, WalletMachine.engine = loop_and_engine
    WalletMachine.audit = staticmethod(audit)
    run_state_machine_as_test(
        WalletMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
