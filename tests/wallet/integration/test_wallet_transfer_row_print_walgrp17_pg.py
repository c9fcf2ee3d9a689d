"""A transfer row stores only the request digests its own columns cannot give back (issue 13):
a Transfer's and a SplitTransfer's operation is their kind's, and their description and metadata
digests are those of the row's own description and metadata, so the row keeps its legs' digest
(a split: its payer's, total's, shares' and remainder's) and a replay puts the others back. A
grouped transfer's row was ~150 bytes longer (four digests of 32 characters and their names in
JSONB): about 9% of a group's WAL. Idempotency is unchanged: the same request replays, a changed
field is refused naming it, and a row stored with every digest (before) still reads the same."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from sqlalchemy import text

from hirepay_platform import jsonb
from hirepay_platform.tcc import IdempotencyMismatch
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h
from wallet.service_layer.batcher import TransferBatcher
from wallet.service_layer.handlers.transfers import transfer_header

pytestmark = pytest.mark.usefixtures("sound")


async def _stored(sessions, transfer_id: str) -> dict:
    async with sessions() as session:
        row = await session.execute(
            text("SELECT fingerprint FROM transfers WHERE id = :id"), {"id": transfer_id}
        )
        return row.scalar_one()


async def test_a_grouped_transfer_row_keeps_its_legs_digest_only(ledger, deps, sessions):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    batcher = TransferBatcher(deps, max_items=2)
    meta = {"order": 'o-1, "x"'}
    plain = c.Transfer(f"rp-{uuid.uuid4().hex}", (Leg(alice, bob, 5, "USD"),))
    rich = c.Transfer(f"rp-{uuid.uuid4().hex}", (Leg(alice, bob, 7, "USD"),), "rent, May", meta)
    for cmd in (plain, rich):
        assert not (await batcher.transfer(cmd)).replayed
        header, _ = transfer_header(cmd)
        stored = await _stored(sessions, cmd.transfer_id)
        assert stored == {"legs": header.fingerprint["legs"]}
        assert len(jsonb.dumps(stored)) < len(jsonb.dumps(dict(header.fingerprint))) - 120
    # The same requests replay, by the grouped path and by a lone call.
    assert (await batcher.transfer(rich)).replayed
    assert (await h.transfer(plain, deps)).replayed
    # A changed field is refused, named.
    for changed, field in (
        (c.Transfer(rich.transfer_id, rich.legs, "rent, June", meta), "description"),
        (c.Transfer(rich.transfer_id, rich.legs, "rent, May", {}), "metadata"),
        (c.Transfer(rich.transfer_id, (Leg(alice, bob, 8, "USD"),), "rent, May", meta), "legs"),
        (c.Transfer(plain.transfer_id, plain.legs, "now described"), "description"),
    ):
        with pytest.raises(IdempotencyMismatch) as refused:
            await h.transfer(changed, deps)
        assert f"different {field}" in str(refused.value)
    assert await ledger.balances(alice, bob) == [(1000 - 12, 0), (12, 0)]


async def test_a_split_row_keeps_its_own_fields_digests(ledger, deps, sessions):
    alice, bob, carol = await ledger.open("alice"), await ledger.open("bob"), await ledger.open("c")
    await ledger.fund(alice, 1000)
    split = c.SplitTransfer(
        f"rp-{uuid.uuid4().hex}",
        alice,
        100,
        "USD",
        (Share(bob, 5000), Share(carol, 5000)),
        carol,
        "halves",
    )
    assert not (await h.split_transfer(split, deps)).replayed
    stored = await _stored(sessions, split.transfer_id)
    assert sorted(stored) == ["from_account_id", "remainder_account_id", "shares", "total"]
    assert (await h.split_transfer(split, deps)).replayed
    with pytest.raises(IdempotencyMismatch) as refused:
        await h.split_transfer(dataclasses.replace(split, description="x"), deps)
    assert "different description" in str(refused.value)


async def test_a_row_stored_with_every_digest_reads_the_same(ledger, deps, sessions):
    """Rows written before keep their full fingerprint: a replay and a refusal read as before."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    cmd = c.Transfer(f"rp-{uuid.uuid4().hex}", (Leg(alice, bob, 5, "USD"),), "old", {"k": "v"})
    await h.transfer(cmd, deps)
    header, _ = transfer_header(cmd)
    async with sessions() as session:
        await session.execute(
            text("UPDATE transfers SET fingerprint = CAST(:f AS jsonb) WHERE id = :id"),
            {"f": jsonb.dumps(dict(header.fingerprint)), "id": cmd.transfer_id},
        )
        await session.commit()
    assert (await h.transfer(cmd, deps)).replayed
    with pytest.raises(IdempotencyMismatch) as refused:
        await h.transfer(c.Transfer(cmd.transfer_id, cmd.legs, "new", {"k": "v"}), deps)
    assert "different description" in str(refused.value)
