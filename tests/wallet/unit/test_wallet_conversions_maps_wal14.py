"""A Transfer's metadata map crosses the protobuf boundary without the Mapping ABC's Python
methods (issue 13, round 14): `dict()` of a upb map walked its key view (keys, the view's
`__init__` and `__iter__`: 3 Python calls per Transfer) and a dict given for a reply's map field
was copied by `MutableMapping.update` (2 per reply, a Confirm's too, whose transfer carries its
branch). The same metadata either way, empty or not (ESC-1: a transfer's metadata as posted)."""

from __future__ import annotations

import cProfile
import pstats
from datetime import UTC, datetime

from hirepay.wallet.v1 import wallet_service_pb2 as pb
from tests.support.python_calls import profiled
from wallet.domain.ledger import Entry, TransferRecord
from wallet.entrypoints import conversions as conv

_AT = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)


def _abc_calls(profile: cProfile.Profile) -> list[str]:
    """The collections.abc functions the profiled code ran."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return sorted(name for (path, _, name) in stats if "_collections_abc" in path or "abc>" in path)


def _request(metadata: dict[str, str]) -> pb.TransferRequest:
    leg = pb.TransferLeg(from_account_id="a", to_account_id="b")
    leg.amount.amount_minor, leg.amount.currency = 100, "USD"
    return pb.TransferRequest(transfer_id="t-1", legs=[leg], metadata=metadata)


def test_a_transfer_requests_metadata_is_copied_without_the_mapping_abc():
    for metadata in ({}, {"order": "o-1", "note": 'ü, "x"'}):
        request = _request(metadata)
        split = pb.SplitTransferRequest(transfer_id="s-1", metadata=metadata)
        with profiled() as profile:
            cmd = conv.transfer_from_pb(request)
            split_cmd = conv.split_transfer_from_pb(split)
        assert cmd.metadata == split_cmd.metadata == metadata
        assert type(cmd.metadata) is dict and type(split_cmd.metadata) is dict
        assert _abc_calls(profile) == []


def test_a_transfer_records_metadata_is_set_without_the_mapping_abc():
    entries = (
        Entry(1, "t-1", "a", "USD", -100, _AT),
        Entry(2, "t-1", "b", "USD", 100, _AT),
    )
    for metadata in ({}, {"global_tx_id": "g-1", "branch_id": "payment"}):
        record = TransferRecord("t-1", "a description", metadata, _AT, entries)
        with profiled() as profile:
            message = conv.transfer_record_to_pb(record)
        assert dict(message.metadata) == metadata
        assert (message.transfer_id, message.description) == ("t-1", "a description")
        assert [(e.entry_id, e.amount.amount_minor) for e in message.entries] == [
            (1, -100),
            (2, 100),
        ]
        assert message.created_at.ToDatetime(tzinfo=UTC) == _AT
        assert _abc_calls(profile) == []
