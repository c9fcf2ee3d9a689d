"""AuditTransferEntries over gRPC (OPS-3, payments' bookings audit): the entries of the given
transfers only, read-only, and a request over the limit refused with VALIDATION_FAILED."""

from __future__ import annotations

import grpc

from hirepay.wallet.v1 import wallet_service_pb2 as pb
from tests.support.wallet_grpc import refused, uid


async def test_the_entries_of_the_given_transfers_and_nothing_else(client):
    alice, bob, carol = [await client.open(n) for n in ("alice", "bob", "carol")]
    await client.fund(alice, 1000)
    first = await client.transfer(f"a-{uid()}", (alice, bob, 300))
    second = await client.transfer(f"b-{uid()}", (alice, carol, 200), (alice, bob, 50))
    await client.transfer(f"c-{uid()}", (bob, carol, 10))  # not asked for
    before = [await client.balance(a) for a in (alice, bob, carol)]

    reply = await client.stub.AuditTransferEntries(
        pb.AuditTransferEntriesRequest(
            transfer_ids=[
                second.transfer.transfer_id,
                f"nowhere-{uid()}",
                first.transfer.transfer_id,
            ]
        ),
        timeout=5,
    )

    expected = sorted([*first.transfer.entries, *second.transfer.entries], key=lambda e: e.entry_id)
    assert list(reply.entries) == expected
    assert sum(e.amount.amount_minor for e in reply.entries) == 0
    assert {(e.account_id, e.amount.amount_minor) for e in reply.entries} == {
        (alice, -300),
        (bob, 300),
        (alice, -200),
        (carol, 200),
        (alice, -50),
        (bob, 50),
    }
    assert [await client.balance(a) for a in (alice, bob, carol)] == before  # read-only
    empty = await client.stub.AuditTransferEntries(pb.AuditTransferEntriesRequest(), timeout=5)
    assert list(empty.entries) == []


async def test_more_than_a_thousand_transfers_are_refused(client):
    code, reason, meta = await refused(
        client.stub.AuditTransferEntries(
            pb.AuditTransferEntriesRequest(transfer_ids=[f"t-{i}" for i in range(1001)]),
            timeout=5,
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert "at most 1000" in meta["transfer_ids"]
