"""Free text and JSON reach PostgreSQL's arrays as the text of one array literal
(`hirepay_platform.sql_lists.quoted_list`), not as Python lists (issue 13, round 14): asyncpg
asked collections.abc of every list parameter (3 Python calls) and of each of its elements (2),
and SQLAlchemy's JSONB encoder ran once per JSON element - 15 of a lone Transfer's ~285 Python
calls at the servicer and 34 + 4 of a Reserve + Confirm pair's ~524. On real PostgreSQL: every
description, metadata document and fingerprint is stored exactly as given (commas, quotes,
backslashes, braces, an empty string, the text NULL), on the one-statement paths and the checked
ones, and a changed repeat is still refused on its stored fingerprint (ESC-1, ESC-2)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from hirepay_platform.sql_lists import quoted, quoted_list
from hirepay_platform.tcc import TccBranch
from tests.support.asyncpg_checks import runs_the_driver
from tests.support.python_calls import hooked
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.service_layer.batcher import _transfers
from wallet.service_layer.handlers.grouped_holds import confirm_holds, reserve_holds

pytestmark = pytest.mark.usefixtures("sound")

T = TypeVar("T")

# Text an array literal would read otherwise if it were not quoted and escaped.
AWKWARD = [
    "a, b",
    'say "hi"',
    "back\\slash",
    "{braces}",
    "NULL",
    "",
    "  spaced  ",
    "line\nbreak",
    "ß € 日本",
]


async def _driver_questions(call: Awaitable[T]) -> tuple[T, list[str]]:
    """`call`'s result, and what asyncpg and SQLAlchemy's asyncpg codecs were asked in Python
    while it ran: the type of each value collections.abc was asked about from the driver's
    execution, and each JSONB encoder call."""
    asked: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        name = frame.f_code.co_name
        back = frame.f_back
        if (
            name == "__instancecheck__"
            and back
            and runs_the_driver(back.f_code.co_filename, back.f_code.co_name)
        ):
            asked.append(type(frame.f_locals.get("instance")).__name__)
        elif name == "_jsonb_encoder":
            asked.append("jsonb encoder")

    with hooked(profile):
        result = await call
    return result, asked


async def test_quoted_lists_read_back_as_the_arrays_given(sessions):
    documents = ['{"a": "x, y"}', '{"b": "\\"q\\" \\\\ {}"}', "{}"]
    async with sessions() as session:
        row = (
            await session.execute(
                text(f"SELECT {quoted('t', 'text')} AS texts, {quoted('j', 'jsonb')} AS docs"),
                {"t": quoted_list(AWKWARD), "j": quoted_list(documents)},
            )
        ).one()
        empty = (
            await session.execute(
                text(f"SELECT cardinality({quoted('t', 'text')})"), {"t": quoted_list([])}
            )
        ).scalar_one()
    assert list(row.texts) == AWKWARD
    assert list(row.docs) == [{"a": "x, y"}, {"b": '"q" \\ {}'}, {}]
    assert empty == 0


async def test_grouped_transfers_store_their_text_exactly_without_asking_per_element(
    ledger, deps, sessions
):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 10_000)
    transfers = [
        c.Transfer(
            f"ql-{uuid.uuid4().hex[:12]}",
            (Leg(alice, bob, 10, "USD"),),
            description=description,
            metadata={"note": description, "k,1": '"v"'} if i % 2 else {},
        )
        for i, description in enumerate(AWKWARD)
    ]
    outcomes, asked = await _driver_questions(_transfers(transfers, deps))
    assert [o.error for o in outcomes] == [None] * len(AWKWARD)
    assert asked == []  # no list parameter, no JSONB element encoded in Python

    # A group that may refuse one of its transfers is posted checked: the same text stored (its
    # statements still bind some lists of ids, but no JSON document goes element by element).
    poor = await ledger.open("poor")
    checked = [
        c.Transfer(f"ql-{uuid.uuid4().hex[:12]}", (Leg(alice, bob, 10, "USD"),), description=d)
        for d in AWKWARD[:3]
    ] + [c.Transfer(f"ql-{uuid.uuid4().hex[:12]}", (Leg(poor, bob, 10, "USD"),), "x, y")]
    outcomes, asked = await _driver_questions(_transfers(checked, deps))
    assert [o.error.reason if o.error else None for o in outcomes] == [None] * 3 + [
        "INSUFFICIENT_FUNDS"
    ]
    assert "jsonb encoder" not in asked

    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT id, description, metadata FROM transfers WHERE id = ANY(:ids)"),
                {"ids": [t.transfer_id for t in transfers + checked[:3]]},
            )
        ).all()
    stored = {r.id: (r.description, r.metadata) for r in rows}
    assert [stored[t.transfer_id] for t in transfers + checked[:3]] == [
        (t.description, dict(t.metadata)) for t in transfers + checked[:3]
    ]
    assert checked[3].transfer_id not in stored
    assert await ledger.balances(alice, bob) == [
        (10_000 - 10 * (len(AWKWARD) + 3), 0),
        (10 * (len(AWKWARD) + 3), 0),
    ]

    # Idempotency on the stored fingerprints: the same request replays, a changed one is refused.
    again = [transfers[1], c.Transfer(transfers[2].transfer_id, (Leg(alice, bob, 11, "USD"),))]
    outcomes = await _transfers(again, deps)
    assert outcomes[0].result is not None and outcomes[0].result.replayed
    assert outcomes[1].error is not None and outcomes[1].error.reason == "IDEMPOTENCY_MISMATCH"


async def test_a_grouped_reserve_and_confirm_store_their_text_exactly(ledger, deps, sessions):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 10_000)
    branches = [TccBranch(f"ql-{uuid.uuid4().hex[:12]}", "payment") for _ in AWKWARD]
    reserves = [
        c.ReserveHold(b, alice, bob, 100, "USD", description=d)
        for b, d in zip(branches, AWKWARD, strict=True)
    ]
    reserved, asked_reserve = await _driver_questions(reserve_holds(reserves, deps))
    confirmed, asked_confirm = await _driver_questions(
        confirm_holds([c.ConfirmHold(b) for b in branches], deps)
    )
    assert [o.error for o in reserved + confirmed] == [None] * 2 * len(AWKWARD)
    # Only the holds' expiry times are still a list parameter (one question per timestamp).
    assert "str" not in asked_reserve and "jsonb encoder" not in asked_reserve
    assert asked_confirm == []

    async with sessions() as session:
        holds = (
            await session.execute(
                text(
                    "SELECT h.global_tx_id, h.description, h.state, t.description AS posted"
                    " FROM holds h JOIN transfers t ON t.id = h.transfer_id"
                    " WHERE h.global_tx_id = ANY(:g)"
                ),
                {"g": [b.global_tx_id for b in branches]},
            )
        ).all()
        barriers = (
            await session.execute(
                text("SELECT count(*) FROM tcc_barriers WHERE global_tx_id = ANY(:g)"),
                {"g": [b.global_tx_id for b in branches]},
            )
        ).scalar_one()
    by_branch = {h.global_tx_id: h for h in holds}
    assert [
        (by_branch[b.global_tx_id].description, by_branch[b.global_tx_id].state) for b in branches
    ] == [(d, "confirmed") for d in AWKWARD]
    assert [by_branch[b.global_tx_id].posted for b in branches] == AWKWARD
    assert barriers == 2 * len(AWKWARD)
    assert await ledger.balances(alice, bob) == [
        (10_000 - 100 * len(AWKWARD), 0),
        (100 * len(AWKWARD), 0),
    ]
    # The barrier's stored fingerprints still tell a changed repeat from a replay.
    changed = c.ReserveHold(branches[0], alice, bob, 101, "USD", description=AWKWARD[0])
    again = await reserve_holds([changed, reserves[1]], deps)
    assert again[0].error is not None and again[0].error.reason == "IDEMPOTENCY_MISMATCH"
    assert again[1].result is not None and again[1].result.replayed
