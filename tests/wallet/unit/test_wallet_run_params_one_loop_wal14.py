"""The parameters of a run of postings and of a group of new holds are built in one loop each
(issue 13, round 14): a list comprehension and a `sql_lists.joined` per list were 30 Python calls
per transfer statement and 12 per holds statement, the most of a lone Transfer's repository work
(269 -> 232 Python calls at the servicer). The parameters are exactly those the per-list
comprehensions made (the reference below), for runs with row changes, shard changes (a fee to a
sharded account) and several entries, so every statement binds the same values (ESC-1, ESC-2)."""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hirepay_platform import jsonb
from hirepay_platform.sql_lists import joined, quoted_list
from hirepay_platform.tcc import TccBranch
from tests.support.python_calls import profiled
from wallet.adapters.repositories.holds import _new_hold_params
from wallet.adapters.repositories.ledger import run_params
from wallet.domain.holds import Hold
from wallet.domain.ledger import BalanceChange, EntryLine, Posting, ShardChange
from wallet.service_layer.ports import TransferHeader

_NOW = datetime(2026, 12, 2, 7, 30, tzinfo=UTC)


def _reference_run_params(items: Sequence[tuple[TransferHeader, Posting]]) -> dict[str, Any]:
    """What run_params bound before: one comprehension and one `joined` per list."""
    changes = [(n, c) for n, (_, p) in enumerate(items, 1) for c in p.row_changes]
    shards = [(n, s) for n, (_, p) in enumerate(items, 1) for s in p.shard_changes]
    lines = [(n, e) for n, (_, p) in enumerate(items, 1) for e in p.entries]
    return {
        "ids": joined([h.id for h, _ in items]),
        "kinds": joined([h.kind for h, _ in items]),
        "descriptions": quoted_list([h.description for h, _ in items]),
        "metadata": quoted_list(
            [jsonb.dumps(dict(h.metadata)) if h.metadata else "{}" for h, _ in items]
        ),
        "fingerprints": quoted_list([jsonb.dumps(dict(h.fingerprint)) for h, _ in items]),
        "account_ids": joined(sorted({c.account_id for _, c in changes})),
        "row_items": joined([n for n, _ in changes]),
        "row_ids": joined([c.account_id for _, c in changes]),
        "row_posted": joined([c.posted for _, c in changes]),
        "row_pending": joined([c.pending for _, c in changes]),
        "shard_items": joined([n for n, _ in shards]),
        "shard_ids": joined([s.account_id for _, s in shards]),
        "shard_nos": joined([s.shard for _, s in shards]),
        "shard_posted": joined([s.posted for _, s in shards]),
        "entry_items": joined([n for n, _ in lines]),
        "entry_accounts": joined([e.account_id for _, e in lines]),
        "entry_units": joined([e.unit for _, e in lines]),
        "entry_amounts": joined([e.amount for _, e in lines]),
    }


def _python_calls(profile: cProfile.Profile) -> dict[str, int]:
    """Python functions the profiled code ran (file:name) and how often; builtins left out."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return {
        f"{path.rsplit('/', 1)[-1]}:{name}": nc
        for (path, _, name), (_, nc, *_) in stats.items()
        if path != "~"
    }


def _items() -> list[tuple[TransferHeader, Posting]]:
    plain = Posting(
        entries=(EntryLine("b-acct", "USD", -100), EntryLine("c-acct", "USD", 100)),
        row_changes=(BalanceChange("b-acct", -100), BalanceChange("c-acct", 100)),
    )
    with_fee = Posting(
        entries=(
            EntryLine("a-acct", "USD", -110),
            EntryLine("c-acct", "USD", 100),
            EntryLine("rev", "USD", 10),
        ),
        row_changes=(BalanceChange("a-acct", -110), BalanceChange("c-acct", 100)),
        shard_changes=(ShardChange("rev", 7, 10),),
    )
    return [
        (TransferHeader("t-1", "transfer", "", {}, {"legs": "d1"}), plain),
        (TransferHeader("t-2", "hold", 'a, "b"', {"k": "v, w"}, {"legs": "d2"}), with_fee),
        (TransferHeader("t-3", "split", "x", {}, {"legs": "d3", "total": "d4"}), plain),
    ]


def test_a_runs_parameters_are_those_of_the_per_list_comprehensions_in_one_loop():
    items = _items()
    expected = _reference_run_params(items)
    with profiled() as profile:
        params = run_params(items)
    assert params == expected
    assert params["shard_ids"] == "rev" and params["account_ids"] == "a-acct,b-acct,c-acct"
    calls = _python_calls(profile)
    assert "sql_lists.py:joined" not in calls
    # The only comprehensions: quoted_list's own, one per free-text list.
    assert {n for n in calls if n.endswith(("comp>", "<genexpr>"))} == {"sql_lists.py:<listcomp>"}
    # run_params, _headers, 3 x quoted_list and its comprehension, jsonb.dumps per JSON document
    # (3 fingerprints, 1 metadata): 30 more before.
    assert sum(calls.values()) == 2 + 2 * 3 + 4


def test_a_groups_new_hold_parameters_are_those_of_the_per_list_comprehensions():
    holds = [
        Hold(
            TccBranch(f"g-{i}", "payment"),
            f"acct-{i}",
            f"dest-{i}",
            "USD",
            100 + i,
            _NOW + timedelta(minutes=i),
            _NOW,
            description=["", "a, b", 'say "hi"'][i],
        )
        for i in range(3)
    ]
    with profiled() as profile:
        params = _new_hold_params(holds, keys=False)
    assert params == {
        "account_ids": "acct-0,acct-1,acct-2",
        "destination_account_ids": "dest-0,dest-1,dest-2",
        "units": "USD,USD,USD",
        "amounts": "100,101,102",
        "expires_at": [h.expires_at for h in holds],
        "descriptions": quoted_list(["", "a, b", 'say "hi"']),
        "created_at": _NOW,
    }
    calls = _python_calls(profile)
    assert "sql_lists.py:joined" not in calls
    assert "holds.py:<listcomp>" not in calls
