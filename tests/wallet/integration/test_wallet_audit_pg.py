"""AuditLedger on real PostgreSQL (OPS-3): nothing to report on a sound ledger; each broken
invariant injected straight into the tables is reported with the offending id."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from hirepay_platform.tcc import TccBranch
from wallet.domain import commands as c
from wallet.domain.audit import FindingKind
from wallet.service_layer import handlers as h
from wallet.service_layer.handlers.audit import audit_ledger


async def _findings(deps, grace: int = 60) -> dict[FindingKind, set[str]]:
    found: dict[FindingKind, set[str]] = {}
    for f in await audit_ledger(c.AuditLedger(hold_grace_seconds=grace), deps):
        found.setdefault(f.kind, set()).add(f.subject_id)
    return found


async def test_a_sound_ledger_has_nothing_to_report(ledger, deps, engine, audit):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    branch = TccBranch(f"saga-{uuid.uuid4().hex[:12]}", "payment")
    await h.reserve_hold(c.ReserveHold(branch, alice, bob, 400, "USD", 600), deps)
    assert await audit(engine) == {}
    assert await _findings(deps) == {}


async def test_each_broken_invariant_is_reported(ledger, deps, engine, clock):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    branch = TccBranch(f"saga-{uuid.uuid4().hex[:12]}", "payment")
    await h.reserve_hold(c.ReserveHold(branch, alice, bob, 400, "USD", 60), deps)
    transfer = f"bad-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        # The database's own zero-sum trigger would refuse this: injected past it (replica role).
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(
            text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:id, 'transfer', '{}')"),
            {"id": transfer},
        )
        await conn.execute(
            text(
                "INSERT INTO entries (transfer_id, account_id, unit, amount)"
                " VALUES (:t, :a, 'USD', 5)"
            ),
            {"t": transfer, "a": bob},
        )
        # A balance shard the row's own check does not cover takes bob below zero.
        await conn.execute(
            text("INSERT INTO account_shards (account_id, shard, posted) VALUES (:a, 1, -10)"),
            {"a": bob},
        )
    early = await _findings(deps)
    assert early[FindingKind.UNBALANCED_TRANSACTION] == {transfer}
    assert early[FindingKind.BALANCE_LIMIT_BREACH] == {bob}
    assert FindingKind.EXPIRED_HOLD_UNRELEASED not in early  # not expired yet
    clock.advance(60 + 61)  # past its expiry and the grace, and no expiry worker ran
    late = await _findings(deps)
    assert late[FindingKind.EXPIRED_HOLD_UNRELEASED] == {f"{branch.global_tx_id}/payment"}
    # Repaired: the module's database is sound again for the other tests.
    await h.release_expired_holds(c.ReleaseExpiredHolds(), deps)
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text("DELETE FROM entries WHERE transfer_id = :t"), {"t": transfer})
        await conn.execute(text("DELETE FROM transfers WHERE id = :t"), {"t": transfer})
        await conn.execute(text("DELETE FROM account_shards WHERE account_id = :a"), {"a": bob})
    assert await _findings(deps) == {}
