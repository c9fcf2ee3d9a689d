"""Batches of transfers on real PostgreSQL: CreateTransfers' per-item outcomes and idempotency, and
the batcher that groups concurrent single transfers, acknowledging each only after COMMIT."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from sqlalchemy import text

from hirepay_platform.errors import HirepayError
from tests.wallet.integration.conftest import posted_or_replayed
from wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from wallet.domain import commands as c
from wallet.domain.ledger import Leg, entries_for_legs, plan_posting
from wallet.domain.model import AccountKind
from wallet.service_layer import handlers as h
from wallet.service_layer.batcher import TransferBatcher
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.transfers import transfer_header

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

                async def post_many_then_die(items, ahead=()):
                    if doomed and killer.where == "mid-batch":
                        await killer.kill(session)
                    return await post_many(items, ahead)

                async def post_then_die(*args, **kwargs):
                    if doomed and killer.where == "mid-batch":
                        await killer.kill(session)
                    return await post(*args, **kwargs)

                post_alone = self.ledger.post_run_alone

                async def post_alone_then_die(items):
                    # A batch that is one statement of its own: that statement is its COMMIT.
                    if doomed:
                        await killer.kill(session)
                    return await post_alone(items)

                self.ledger.post_many = post_many_then_die
                self.ledger.post = post_then_die
                self.ledger.post_run_alone = post_alone_then_die

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


class PathCounter:
    """Units of work that count which way their batches were posted: as one statement of its own
    (post_run_alone applied), or checked in a transaction (post_many / post)."""

    def __init__(self, sessions) -> None:
        self.sessions = sessions
        self.paths: Counter[str] = Counter()

    def __call__(self) -> SqlWalletUnitOfWork:
        counter = self

        class Counted(SqlWalletUnitOfWork):
            def _attach(self, session) -> None:
                super()._attach(session)
                alone, many = self.ledger.post_run_alone, self.ledger.post_many

                async def counted_alone(items):
                    outcomes = await alone(items)
                    counter.paths["alone" if outcomes is not None else "declined"] += 1
                    return outcomes

                async def counted_many(items, ahead=()):
                    counter.paths["checked"] += 1
                    return await many(items, ahead)

                self.ledger.post_run_alone = counted_alone
                self.ledger.post_many = counted_many

        return Counted(self.sessions)


async def test_a_batch_none_of_which_can_be_refused_is_one_statement_of_its_own(
    ledger, sessions, clock
):
    """Distinct ids, every debit covered even if all of them apply: one statement that commits by
    itself (no COMMIT of the unit of work); a taken id is replayed from the committed rows, fees
    to the sharded revenue account go to its shards."""
    alice, bob, carol = [await ledger.open(n) for n in ("alice", "bob", "carol")]
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(alice, 100)
    await ledger.fund(carol, 10)
    paths = PathCounter(sessions)
    deps = Deps(uow=paths, clock=clock)
    tag = ledger.tag
    first = await h.create_transfers(c.CreateTransfers((t(f"x-{tag}", (alice, bob, 5)),)), deps)
    batch = c.CreateTransfers(
        (
            t(f"y-{tag}", (alice, bob, 60), (alice, revenue, 6)),
            t(f"x-{tag}", (alice, bob, 5)),  # taken: replayed
            # 95 - 66 - 5 (the twin's debit counts: it could have been claimed) - 24 = 0
            t(f"z-{tag}", (alice, carol, 24)),
            t(f"w-{tag}", (carol, bob, 10)),  # carol's own 10, not z's credit
        )
    )
    outcomes = await h.create_transfers(batch, deps)
    assert summary(outcomes) == ["posted", "replayed", "posted", "posted"]
    assert paths.paths == {"alone": 2}
    assert first[0].result is not None and outcomes[1].result is not None
    assert outcomes[1].result.transfer.entries == first[0].result.transfer.entries
    assert await ledger.balances(alice, bob, carol, revenue) == [
        (5, 0),
        (75, 0),
        (24, 0),
        (6, 0),
    ]
    stored = await h.get_transfer(c.GetTransfer(f"y-{tag}"), deps)
    assert [e.amount for e in stored.entries] == [-60, 60, -6, 6]
    assert outcomes[0].result is not None
    assert [e.id for e in outcomes[0].result.transfer.entries] == [e.id for e in stored.entries]


async def test_a_batch_that_spends_an_earlier_credit_of_itself_is_posted_checked(
    ledger, sessions, clock
):
    """A debit covered only by a credit earlier in the same batch (or not at all) could be
    refused: the one-statement path writes nothing, not even a claim, and the batch is judged
    posting by posting; every transfer gets the outcome it would have had on its own."""
    alice, bob, carol = [await ledger.open(n) for n in ("alice", "bob", "carol")]
    await ledger.fund(alice, 50)
    paths = PathCounter(sessions)
    deps = Deps(uow=paths, clock=clock)
    tag = ledger.tag
    outcomes = await h.create_transfers(
        c.CreateTransfers(
            (
                t(f"p-{tag}", (alice, bob, 50)),
                t(f"q-{tag}", (bob, carol, 50)),  # bob had nothing before this batch
                t(f"r-{tag}", (bob, carol, 1)),  # bob has nothing left: refused alone
            )
        ),
        deps,
    )
    assert summary(outcomes) == ["posted", "posted", "INSUFFICIENT_FUNDS"]
    assert paths.paths == {"declined": 1, "checked": 1}
    assert await ledger.balances(alice, bob, carol) == [(0, 0), (0, 0), (50, 0)]
    assert not await _transfer_exists(sessions, f"r-{tag}")


async def test_a_declined_statement_leaves_nothing_behind(ledger, uow, sessions):
    """post_run_alone on its own: a run that could overdraw writes nothing at all and says so."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 10)
    tag = ledger.tag
    items = [t(f"u{i}-{tag}", (alice, bob, 6)) for i in range(2)]  # 12 > 10
    async with uow() as work:
        refs = await work.accounts.refs({alice, bob})
        run = []
        for item in items:
            header, legs = transfer_header(item)
            run.append((header, plan_posting(header.id, entries_for_legs(legs, refs), refs)))
        assert await work.ledger.post_run_alone(run) is None
    for item in items:
        assert not await _transfer_exists(sessions, item.transfer_id)
    assert await ledger.balances(alice, bob) == [(10, 0), (0, 0)]


async def test_twins_in_concurrent_batches_of_replicas_post_once(ledger, deps):
    """Four replicas' batchers get the same twenty transfers at once (each batch of distinct ids,
    one statement each): every transfer is posted exactly once, its twins replayed, and the
    balances moved once."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    replicas = [
        TransferBatcher(deps, max_items=8, window_seconds=0.002, max_in_flight=2) for _ in range(4)
    ]
    ids = [f"tw{i}-{ledger.tag}" for i in range(20)]
    calls = [
        (transfer_id, replica.transfer(t(transfer_id, (alice, bob, 7))))
        for transfer_id in ids
        for replica in replicas
    ]
    outcomes = await asyncio.gather(*(posted_or_replayed(call) for _, call in calls))
    per_id: dict[str, Counter[str]] = {}
    for (transfer_id, _), outcome in zip(calls, outcomes, strict=True):
        per_id.setdefault(transfer_id, Counter())[outcome] += 1
    assert all(seen == {"posted": 1, "replayed": 3} for seen in per_id.values()), per_id
    assert await ledger.balances(alice, bob) == [(1000 - 20 * 7, 0), (20 * 7, 0)]
