"""Grouped Confirms (one statement, no ON CONFLICT since walhold17) on real PostgreSQL: racing what
may resolve the same holds at once - the expiry worker and single Cancels - each hold ends in exactly
one outcome, the answers agree with the rows, and the balances follow the Confirms that succeeded;
a Confirm whose transfer id is taken fails alone (the group's statement fails on pk_transfers and
the group runs checked), its hold still pending, the others confirmed."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from sqlalchemy import text

from hirepay_platform.errors import HirepayError
from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.conftest import barrier_rows, warm_refs
from tests.wallet.integration.test_wallet_confirm_inserts_walhold17_pg import GROUP, _reserved
from wallet.domain import commands as c
from wallet.domain.holds import HoldState, confirm_transfer_id
from wallet.service_layer import handlers as h
from wallet.service_layer.batcher import HoldBatchers

pytestmark = pytest.mark.usefixtures("sound")

HOLDS = 12  # per round, half of them past their expiry when the race starts


async def _answer(call) -> object:
    try:
        return await call
    except HirepayError as exc:
        return exc.reason


async def _later(delay: float, call) -> object:
    """`call`, started after `delay` seconds (the Confirms wait in their batcher's window)."""
    await asyncio.sleep(delay)
    return await call


async def _expire_all(deps) -> int:
    total = 0
    while n := await h.release_expired_holds(c.ReleaseExpiredHolds(batch_size=5), deps):
        total += n
    return total


async def test_grouped_confirms_racing_expiry_and_cancels_resolve_each_hold_once(
    ledger, deps, sessions, clock
):
    payer, payee = await ledger.open("payer"), await ledger.open("payee")
    await ledger.fund(payer, 1_000_000)
    await warm_refs(deps, payer, payee)
    rng = random.Random(17)
    confirmed_total = 0
    for round_ in range(10):
        # Reserved through the batchers, so the Confirms' group plans on remembered row versions
        # and runs as its one statement (the path that inserts its rows plainly).
        holds = HoldBatchers(deps, max_items=HOLDS, window_seconds=0.002)
        branches = [TccBranch(f"race{round_}-{uuid.uuid4().hex[:12]}", "p") for _ in range(HOLDS)]
        short = set(branches[: HOLDS // 2])
        reserved = await asyncio.gather(
            *(
                holds.reserve.call(
                    c.ReserveHold(b, payer, payee, 100, "USD", 60 if b in short else 3600)
                )
                for b in branches
            )
        )
        assert all(r.hold.state is HoldState.PENDING for r in reserved)
        clock.advance(61)
        cancelled = set(rng.sample(branches, HOLDS // 3))
        # The unexpired holds' Confirms are grouped apart, so that their group can run as its one
        # statement (an expired hold in a group sends the whole group down the checked path).
        apart = HoldBatchers(deps, max_items=HOLDS, window_seconds=0.002)
        calls: list[tuple[str, TccBranch | None, object]] = [
            *(
                ("confirm", b, (holds if b in short else apart).confirm.call(c.ConfirmHold(b)))
                for b in branches
            ),
            *(
                ("cancel", b, _later(rng.uniform(0, 0.01), h.cancel_hold(c.CancelHold(b), deps)))
                for b in cancelled
            ),
            ("expiry", None, _later(rng.uniform(0, 0.01), _expire_all(deps))),
            ("expiry", None, _later(rng.uniform(0, 0.01), _expire_all(deps))),
        ]
        rng.shuffle(calls)
        answers = await asyncio.gather(*(_answer(call) for _, _, call in calls))
        confirms = {
            b: a for (kind, b, _), a in zip(calls, answers, strict=True) if kind == "confirm"
        }
        cancels = {b: a for (kind, b, _), a in zip(calls, answers, strict=True) if kind == "cancel"}
        await _expire_all(deps)  # a hold a Confirm had locked was skipped by the workers
        for branch in branches:
            state = (await h.get_hold(c.GetHold(branch), deps)).hold.state
            answer = confirms[branch]
            if branch in short:  # past its expiry: never confirmed, released once
                assert answer in ("HOLD_EXPIRED", "HOLD_ALREADY_RESOLVED"), (branch, answer)
                if answer == "HOLD_ALREADY_RESOLVED":  # resolved before its Confirm locked it
                    assert state is not HoldState.PENDING
                assert state in (HoldState.EXPIRED, HoldState.CANCELLED)
            elif branch in cancelled:  # exactly one of its Confirm and its Cancel won
                if isinstance(answer, str):
                    assert answer == "HOLD_ALREADY_RESOLVED" and state is HoldState.CANCELLED
                    assert cancels[branch].hold.state is HoldState.CANCELLED
                else:
                    assert state is HoldState.CONFIRMED and not answer.replayed
                    assert cancels[branch] == "HOLD_ALREADY_RESOLVED", cancels[branch]
            else:
                assert not isinstance(answer, str), (branch, answer)
                assert state is HoldState.CONFIRMED
            if state is HoldState.CONFIRMED:
                confirmed_total += 100
                assert await barrier_rows(sessions, branch) == ["confirm", "try"]
            else:
                assert "confirm" not in await barrier_rows(sessions, branch)
        assert await ledger.balances(payer, payee) == [
            (1_000_000 - confirmed_total, 0),
            (confirmed_total, 0),
        ]
    async with sessions() as session:
        transfers = await session.execute(
            text("SELECT count(*) FROM transfers WHERE kind = 'hold' AND id LIKE 'hold/race%'")
        )
        assert transfers.scalar_one() * 100 == confirmed_total


async def test_a_confirm_whose_transfer_id_is_taken_fails_alone(ledger, deps, sessions):
    """A transfer row with a pending hold's Confirm id (no client can name one: ids with "/" are
    refused; written here by hand) fails the group's one statement on pk_transfers: nothing of it
    is written, the group runs checked, and only that Confirm fails (TCC_INCONSISTENT), writing
    nothing either; the group's other Confirms post."""
    holds, branches, payers, payees = await _reserved(ledger, deps)
    taken = branches[0]
    async with sessions() as session, session.begin():
        await session.execute(
            text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:t, 'hold', '{}')"),
            {"t": confirm_transfer_id(taken)},
        )
    first = asyncio.ensure_future(holds.confirm.call(c.ConfirmHold(branches[1])))
    await asyncio.sleep(0)  # alone, then the others as one group with the taken one
    answers = await asyncio.gather(
        first,
        holds.confirm.call(c.ConfirmHold(taken)),
        *(holds.confirm.call(c.ConfirmHold(b)) for b in branches[2:]),
        return_exceptions=True,
    )
    assert isinstance(answers[1], HirepayError) and answers[1].reason == "TCC_INCONSISTENT"
    assert [getattr(a, "replayed", a) for a in answers[:1] + answers[2:]] == [False] * (GROUP - 1)
    assert (await h.get_hold(c.GetHold(taken), deps)).hold.state is HoldState.PENDING
    assert await barrier_rows(sessions, taken) == ["try"]
    assert await ledger.balances(payers[0], payees[0], payers[2], payees[2]) == [
        (10_000, 100),
        (0, 0),
        (9_900, 0),
        (100, 0),
    ]
    async with sessions() as session, session.begin():  # the hand-made row, for the audit
        await session.execute(
            text("DELETE FROM transfers WHERE id = :t"), {"t": confirm_transfer_id(taken)}
        )
    await holds.confirm.call(c.ConfirmHold(taken))  # the id free again: the hold confirms
    assert await ledger.balances(payers[0], payees[0]) == [(9_900, 0), (100, 0)]
