"""Batches of transfers on real PostgreSQL: CreateTransfers' per-item outcomes and idempotency, and
the batcher that groups concurrent single transfers, acknowledging each only after COMMIT."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from sqlalchemy import text

from hirepay_platform.errors import HirepayError
from wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind
from wallet.service_layer import handlers as h
from wallet.service_layer.batcher import TransferBatcher
from wallet.service_layer.deps import Deps

pytestmark = pytest.mark.usefixtures("sound")


def t(transfer_id: str, *legs: tuple[str, str, int], description: str = "") -> c.Transfer:
    return c.Transfer(transfer_id, tuple(Leg(f, to, a, "USD") for f, to, a in legs), description)


def summary(outcomes: list[h.BatchOutcome]) -> list[str]:
    """Each outcome as 'posted', 'replayed' or the error's reason."""
    return [
        o.error.reason
        if o.error is not None
        else ("replayed" if o.result is not None and o.result.replayed else "posted")
        for o in outcomes
    ]


async def _transfer_exists(sessions, transfer_id: str) -> bool:
    async with sessions() as session:
        found = await session.execute(
            text("SELECT 1 FROM transfers WHERE id = :id"), {"id": transfer_id}
        )
        return found.first() is not None


async def test_each_transfer_of_a_batch_has_its_own_outcome(ledger, deps, sessions):
    alice, bob, carol = [await ledger.open(n) for n in ("alice", "bob", "carol")]
    await ledger.fund(alice, 100)
    tag = ledger.tag
    nobody = str(uuid.uuid4())
    batch = c.CreateTransfers(
        (
            t(f"a-{tag}", (alice, bob, 60)),  # posted
            t(f"b-{tag}", (alice, carol, 60)),  # only 40 left: refused alone
            t(f"c-{tag}", (bob, carol, 50)),  # spends what a-... gave bob in this batch
            t(f"d-{tag}", (alice, nobody, 1)),  # unknown account
            t("bad id!", (alice, bob, 1)),  # invalid id
            t(f"a-{tag}", (alice, bob, 60)),  # same id, same fields: replayed
            t(f"a-{tag}", (alice, bob, 61)),  # same id, other fields: refused
            t(f"b-{tag}", (alice, carol, 40)),  # the refused id is free again: posted
        )
    )
    outcomes = await h.create_transfers(batch, deps)
    assert summary(outcomes) == [
        "posted",
        "INSUFFICIENT_FUNDS",
        "posted",
        "ACCOUNT_NOT_FOUND",
        "VALIDATION_FAILED",
        "replayed",
        "IDEMPOTENCY_MISMATCH",
        "posted",
    ]
    assert outcomes[5].result is not None and outcomes[0].result is not None
    assert outcomes[5].result.transfer.entries == outcomes[0].result.transfer.entries
    assert await ledger.balances(alice, bob, carol) == [(0, 0), (10, 0), (90, 0)]
    assert not await _transfer_exists(sessions, f"d-{tag}")
    stored = await h.get_transfer(c.GetTransfer(f"b-{tag}"), deps)
    assert [e.amount for e in stored.entries] == [-40, 40]

    # The same batch again: every posted transfer is replayed, nothing moves.
    again = await h.create_transfers(batch, deps)
    assert summary(again) == [
        "replayed",
        "IDEMPOTENCY_MISMATCH",  # b-... now holds the 40 transfer
        "replayed",
        "ACCOUNT_NOT_FOUND",
        "VALIDATION_FAILED",
        "replayed",
        "IDEMPOTENCY_MISMATCH",
        "replayed",
    ]
    assert await ledger.balances(alice, bob, carol) == [(0, 0), (10, 0), (90, 0)]


async def test_a_batch_with_a_guarded_debit_of_a_sharded_account(ledger, deps):
    """A debit of the (non-negative, sharded) revenue account takes the checked slow path in its
    turn; fees into it go to one shard for the batch."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(alice, 100)
    tag = ledger.tag
    outcomes = await h.create_transfers(
        c.CreateTransfers(
            (
                t(f"fee1-{tag}", (alice, revenue, 30)),
                t(f"fee2-{tag}", (alice, revenue, 20)),
                t(f"out1-{tag}", (revenue, bob, 45)),  # 50 in revenue: affordable
                t(f"out2-{tag}", (revenue, bob, 10)),  # 5 left: refused alone
                t(f"fee3-{tag}", (alice, revenue, 5)),
            )
        ),
        deps,
    )
    assert summary(outcomes) == ["posted", "posted", "posted", "INSUFFICIENT_FUNDS", "posted"]
    assert await ledger.balances(alice, bob, revenue) == [(45, 0), (45, 0), (10, 0)]


async def test_batched_transfers_keep_their_description_and_metadata(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 100)
    items = tuple(
        c.Transfer(
            f"m{i}-{ledger.tag}",
            (Leg(alice, bob, 10, "USD"),),
            f"rent {i}",
            {"invoice": f"inv-{i}", "note": 'quotes " and \\ survive'},
        )
        for i in range(3)
    )
    outcomes = await h.create_transfers(c.CreateTransfers(items), deps)
    assert summary(outcomes) == ["posted"] * 3
    for i, item in enumerate(items):
        stored = await h.get_transfer(c.GetTransfer(item.transfer_id), deps)
        assert stored.description == f"rent {i}" and stored.metadata == dict(item.metadata)
        assert outcomes[i].result is not None
        assert outcomes[i].result.transfer.metadata == dict(item.metadata)
        assert [e.description for e in stored.entries] == [f"rent {i}"] * 2
    again = await h.create_transfers(c.CreateTransfers(items), deps)
    assert summary(again) == ["replayed"] * 3  # the stored fingerprints match the requests


async def test_batch_limits(deps):
    with pytest.raises(HirepayError) as caught:
        await h.create_transfers(c.CreateTransfers(()), deps)
    assert caught.value.reason == "VALIDATION_FAILED"


async def _outcome(call) -> object:
    try:
        return await call
    except HirepayError as exc:
        return exc.reason


async def test_a_hundred_grouped_transfers_take_exactly_what_is_affordable(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    others = [await ledger.open(f"o{i}") for i in range(4)]
    for other in others:
        await ledger.fund(other, 100)
    batcher = TransferBatcher(deps, max_items=16, window_seconds=0.002, max_in_flight=3)
    calls = [
        batcher.transfer(t(f"g{i}-{ledger.tag}", (alice, bob, 30)))
        if i % 5
        else batcher.transfer(t(f"g{i}-{ledger.tag}", (others[i % 4], bob, 10)))
        for i in range(100)
    ]
    outcomes = await asyncio.gather(*(_outcome(call) for call in calls))
    from_alice = Counter(
        "ok" if not isinstance(o, str) else o for i, o in enumerate(outcomes) if i % 5
    )
    assert from_alice == {"ok": 33, "INSUFFICIENT_FUNDS": 47}  # 33 * 30 <= 1000 < 34 * 30
    assert all(not isinstance(o, str) for i, o in enumerate(outcomes) if i % 5 == 0)
    assert await ledger.balances(alice, bob) == [(10, 0), (990 + 20 * 10, 0)]


class ConnectionKiller:
    """Makes units of work whose database connection, for the chosen batches, is terminated by the
    server (as a crash or a failover would) either mid-batch (before its postings are written) or
    at COMMIT (the COMMIT never completes)."""

    def __init__(self, sessions, kill_batches: set[int], where: str) -> None:
        self.sessions = sessions
        self.kill_batches = kill_batches
        self.where = where
        self.count = 0

    async def kill(self, session) -> None:
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar()
        async with self.sessions() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    def __call__(self) -> SqlWalletUnitOfWork:
        self.count += 1
        doomed = self.count in self.kill_batches
        killer = self

        class Killed(SqlWalletUnitOfWork):
            def _attach(self, session) -> None:
                super()._attach(session)
                post_many, post = self.ledger.post_many, self.ledger.post

                async def post_many_then_die(items):
                    if doomed and killer.where == "mid-batch":
                        await killer.kill(session)
                    return await post_many(items)

                async def post_then_die(*args, **kwargs):
                    if doomed and killer.where == "mid-batch":
                        await killer.kill(session)
                    return await post(*args, **kwargs)

                self.ledger.post_many = post_many_then_die
                self.ledger.post = post_then_die

            async def commit(self) -> None:
                if doomed and killer.where == "commit":
                    await killer.kill(self.session)
                await super().commit()

        return Killed(self.sessions)


@pytest.mark.parametrize("where", ["mid-batch", "commit"])
async def test_nothing_is_acknowledged_before_commit(ledger, sessions, clock, where):
    """Batches whose connection dies fail every caller in them; every caller told "posted" has a
    committed transfer, and no refused caller's transfer exists."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 10_000)
    killer = ConnectionKiller(sessions, kill_batches={2, 4}, where=where)
    batcher = TransferBatcher(
        Deps(uow=killer, clock=clock), max_items=10, window_seconds=0.002, max_in_flight=2
    )
    ids = [f"k{i}-{ledger.tag}" for i in range(60)]
    outcomes = await asyncio.gather(
        *(_outcome(batcher.transfer(t(i, (alice, bob, 1)))) for i in ids)
    )
    acknowledged = [i for i, o in zip(ids, outcomes, strict=True) if not isinstance(o, str)]
    failed = [i for i, o in zip(ids, outcomes, strict=True) if isinstance(o, str)]
    assert killer.count >= 4 and failed and acknowledged
    assert {o for o in outcomes if isinstance(o, str)} == {"DATABASE_UNAVAILABLE"}
    for transfer_id in acknowledged:
        assert await _transfer_exists(sessions, transfer_id), transfer_id
    for transfer_id in failed:
        assert not await _transfer_exists(sessions, transfer_id), transfer_id
    assert await ledger.balances(alice, bob) == [
        (10_000 - len(acknowledged), 0),
        (len(acknowledged), 0),
    ]
