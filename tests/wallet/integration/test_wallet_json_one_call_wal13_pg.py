"""A grouped Reserve + Confirm and a grouped Transfer write their barrier fingerprints, transfer
fingerprints and metadata as JSONB through hirepay_platform.jsonb.dumps (json's C encoder, one
Python call) instead of json.dumps (three: dumps, encode, iterencode), four per pair (issue 13); on real PostgreSQL, the rows hold the same JSON, and a repeat with a changed request
is still refused on its fingerprint (idempotency per id, TCC barrier: ESC-1, ESC-2)."""

from __future__ import annotations

import cProfile
import pstats
import uuid

import pytest
from sqlalchemy import text

from hirepay_platform.tcc import TccBranch
from tests.support.python_calls import profiled
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.service_layer.batcher import _transfers
from wallet.service_layer.handlers.grouped_holds import confirm_holds, reserve_holds

pytestmark = pytest.mark.usefixtures("sound")


def _json_dumps_callers(profile: cProfile.Profile) -> list[str]:
    """Where the profiled code called json.dumps from (module:function), once each."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return sorted(
        {
            f"{caller[0].rsplit('/', 1)[-1]}:{caller[2]}"
            for (path, _, name), (*_, callers) in stats.items()
            if path.endswith("json/__init__.py") and name == "dumps"
            for caller in callers
        }
    )


async def test_a_grouped_pair_and_transfer_encode_their_json_in_one_call_each(
    ledger, deps, sessions
):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 10_000)
    branches = [TccBranch(f"json-{uuid.uuid4().hex[:12]}", "payment") for _ in range(3)]
    reserves = [c.ReserveHold(b, alice, bob, 100, "USD", description="ß €") for b in branches]
    transfer_id = f"json-{uuid.uuid4().hex[:12]}"
    transfer = c.Transfer(
        transfer_id, (Leg(alice, bob, 50, "USD"),), metadata={"order": "o-1", "note": "ü"}
    )
    with profiled() as profile:
        reserved = await reserve_holds(reserves, deps)
        confirmed = await confirm_holds([c.ConfirmHold(b) for b in branches], deps)
        posted = await _transfers([transfer], deps)
    assert [o.error for o in reserved + confirmed + posted] == [None] * 7
    # None is left: the request digests' canonical JSON (sorted keys, hashed: fingerprint.py)
    # goes through one JSONEncoder kept by the module since round 17, not json.dumps.
    assert _json_dumps_callers(profile) == []

    async with sessions() as session:
        fingerprints = (
            await session.execute(
                text(
                    "SELECT op, fingerprint FROM tcc_barriers WHERE global_tx_id = :g ORDER BY op"
                ),
                {"g": branches[0].global_tx_id},
            )
        ).all()
        row = (
            await session.execute(
                text("SELECT metadata, fingerprint FROM transfers WHERE id = :id"),
                {"id": transfer_id},
            )
        ).one()
    assert [op for op, _ in fingerprints] == ["confirm", "try"]
    assert all(isinstance(f, dict) and f for _, f in fingerprints)
    assert row.metadata == {"order": "o-1", "note": "ü"}
    assert isinstance(row.fingerprint, dict) and row.fingerprint

    # A changed repeat is still told apart by its stored fingerprint; the same one is a replay.
    changed = c.ReserveHold(branches[1], alice, bob, 101, "USD", description="ß €")
    again = await reserve_holds([changed, reserves[2]], deps)
    assert again[0].error is not None and again[0].error.reason == "IDEMPOTENCY_MISMATCH"
    assert again[1].result is not None and again[1].result.replayed
    assert await ledger.balances(alice, bob) == [(10_000 - 350, 0), (350, 0)]
