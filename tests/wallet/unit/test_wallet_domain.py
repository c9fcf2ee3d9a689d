"""Domain rules of the wallet: fee splits, postings, the hold state machine, fingerprints."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hirepay_platform.errors import HirepayError, ValidationError
from hirepay_platform.fingerprint import fingerprint, first_mismatch
from hirepay_platform.tcc import TccBranch
from wallet.domain.errors import (
    AccountNotFound,
    HoldAlreadyResolved,
    HoldExpired,
    UnitMismatch,
)
from wallet.domain.holds import Hold, HoldState, confirm_transfer_id, hold_ttl
from wallet.domain.ledger import BalanceChange, EntryLine, Leg, entries_for_legs, plan_posting
from wallet.domain.model import (
    BALANCE_SHARDS,
    AccountKind,
    AccountRef,
    shard_count_for,
    shard_for,
    validate_client_id,
)
from wallet.domain.splits import Part, Share, split_amount

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _ref(kind: AccountKind = AccountKind.USER, allow_negative: bool = False, unit: str = "USD"):
    return AccountRef(
        str(uuid.uuid4()),
        "owner",
        unit,
        kind,
        allow_negative,
        shard_count_for(kind, allow_negative),
    )


# --- splits ----------------------------------------------------------------------------------


def test_split_platform_fee_and_payout_with_remainder_to_the_named_account():
    # ESC-7: 20% service fee, 70% contractor, 10% kept in escrow; 999 cents does not divide evenly.
    shares = [Share("fee", 2000), Share("contractor", 7000), Share("escrow", 1000)]
    parts = split_amount(999, shares, "contractor")
    # floor(199.8)=199, floor(699.3)=699, floor(99.9)=99 -> 997; the 2 left over go to the contractor
    assert parts == [Part("fee", 199), Part("contractor", 701), Part("escrow", 99)]
    assert sum(p.amount for p in parts) == 999


def test_split_exact_amounts_have_no_remainder():
    parts = split_amount(10_000, [Share("fee", 1000), Share("seller", 9000)], "seller")
    assert parts == [Part("fee", 1000), Part("seller", 9000)]


def test_split_of_one_unit_gives_it_all_to_the_remainder_account():
    parts = split_amount(1, [Share("fee", 1000), Share("seller", 9000)], "fee")
    assert parts == [Part("fee", 1), Part("seller", 0)]


@pytest.mark.parametrize(
    ("shares", "remainder", "field"),
    [
        ([], "a", "shares"),
        ([Share("a", 5000), Share("b", 4000)], "a", "shares"),
        ([Share("a", 5000), Share("a", 5000)], "a", "shares[1].to_account_id"),
        ([Share("a", 0), Share("b", 10000)], "b", "shares[0].basis_points"),
        ([Share("a", -1), Share("b", 10001)], "b", "shares[0].basis_points"),
        ([Share("a", 5000), Share("b", 5000)], "c", "remainder_account_id"),
    ],
)
def test_split_refuses_bad_shares_naming_the_field(shares, remainder, field):
    with pytest.raises(ValidationError) as caught:
        split_amount(100, shares, remainder)
    assert field in caught.value.fields


def test_split_refuses_a_non_positive_total():
    with pytest.raises(ValidationError):
        split_amount(0, [Share("a", 10000)], "a")


@st.composite
def _shares(draw):
    n = draw(st.integers(1, 8))
    cuts = sorted(draw(st.lists(st.integers(1, 9999), min_size=n - 1, max_size=n - 1, unique=True)))
    bounds = [0, *cuts, 10000]
    return [Share(f"acct{i}", bounds[i + 1] - bounds[i]) for i in range(n)]


@given(total=st.integers(1, 10**15), shares=_shares(), data=st.data())
def test_split_parts_always_sum_to_the_whole(total, shares, data):
    remainder_account = data.draw(st.sampled_from([s.account_id for s in shares]))
    parts = split_amount(total, shares, remainder_account)
    assert sum(p.amount for p in parts) == total
    assert [p.account_id for p in parts] == [s.account_id for s in shares]
    floors = [total * s.basis_points // 10000 for s in shares]
    for part, share, floor in zip(parts, shares, floors, strict=True):
        if share.account_id == remainder_account:
            # the remainder is what flooring lost: fewer minor units than there are shares
            assert 0 <= part.amount - floor < len(shares)
        else:
            assert part.amount == floor
        assert part.amount >= 0


# --- legs and postings -----------------------------------------------------------------------


def test_each_leg_is_a_debit_and_a_credit():
    a, b, c = _ref(), _ref(), _ref()
    refs = {r.id: r for r in (a, b, c)}
    lines = entries_for_legs([Leg(a.id, b.id, 500, "USD"), Leg(b.id, c.id, 200, "USD")], refs)
    assert lines == [
        EntryLine(a.id, "USD", -500),
        EntryLine(b.id, "USD", 500),
        EntryLine(b.id, "USD", -200),
        EntryLine(c.id, "USD", 200),
    ]


def test_leg_refusals_name_the_field():
    usd, eur = _ref(), _ref(unit="EUR")
    refs = {usd.id: usd, eur.id: eur}
    missing = str(uuid.uuid4())
    with pytest.raises(UnitMismatch) as caught:
        entries_for_legs([Leg(usd.id, eur.id, 1, "USD")], refs)
    assert caught.value.metadata["field"] == "legs[0].amount.currency"
    with pytest.raises(AccountNotFound) as caught:
        entries_for_legs([Leg(usd.id, missing, 1, "USD")], refs)
    assert caught.value.metadata["field"] == "legs[0].to_account_id"
    with pytest.raises(ValidationError) as caught:
        entries_for_legs([Leg(usd.id, usd.id, 1, "USD")], refs)
    assert "legs[0].to_account_id" in caught.value.fields
    with pytest.raises(ValidationError) as caught:
        entries_for_legs([Leg(usd.id, eur.id, -5, "USD")], refs)
    assert "legs[0].amount.amount_minor" in caught.value.fields
    with pytest.raises(ValidationError):
        entries_for_legs([], refs)


def test_plan_posting_sends_fee_credits_to_one_shard_and_never_locks_the_revenue_row():
    user, seller = _ref(), _ref()
    revenue = _ref(AccountKind.PLATFORM_REVENUE)
    refs = {r.id: r for r in (user, seller, revenue)}
    lines = [
        EntryLine(user.id, "USD", -1000),
        EntryLine(seller.id, "USD", 900),
        EntryLine(revenue.id, "USD", 100),
    ]
    posting = plan_posting("tr-1", lines, refs)
    assert {c.account_id for c in posting.row_changes} == {user.id, seller.id}
    assert [c.account_id for c in posting.row_changes] == sorted(
        c.account_id for c in posting.row_changes
    )
    [shard] = posting.shard_changes
    assert (shard.account_id, shard.posted) == (revenue.id, 100)
    assert shard.shard == shard_for("tr-1", BALANCE_SHARDS)
    assert posting.guarded_sharded == ()


def test_plan_posting_guards_a_debit_of_a_non_negative_sharded_account():
    revenue, user = _ref(AccountKind.PLATFORM_REVENUE), _ref()
    clearing = _ref(AccountKind.PROVIDER_CLEARING, allow_negative=True)
    refs = {r.id: r for r in (revenue, user, clearing)}
    posting = plan_posting(
        "tr-2", [EntryLine(revenue.id, "USD", -5), EntryLine(user.id, "USD", 5)], refs
    )
    assert posting.guarded_sharded == (revenue.id,)
    assert BalanceChange(revenue.id, 0, 0) in posting.row_changes
    # an account allowed to go negative needs no guard
    posting = plan_posting(
        "tr-3", [EntryLine(clearing.id, "USD", -5), EntryLine(user.id, "USD", 5)], refs
    )
    assert posting.guarded_sharded == ()
    assert [c.account_id for c in posting.row_changes] == [user.id]


def test_plan_posting_refuses_unbalanced_entries():
    a, b = _ref(), _ref()
    refs = {a.id: a, b.id: b}
    with pytest.raises(HirepayError) as caught:
        plan_posting("x", [EntryLine(a.id, "USD", -5), EntryLine(b.id, "USD", 4)], refs)
    assert caught.value.reason == "UNBALANCED_POSTING"


def test_sharding_applies_to_system_and_negative_accounts_only():
    assert shard_count_for(AccountKind.USER, False) == 0
    assert shard_count_for(AccountKind.ESCROW, False) == 0
    assert shard_count_for(AccountKind.USER, True) == BALANCE_SHARDS
    for kind in (
        AccountKind.PLATFORM_REVENUE,
        AccountKind.PROVIDER_CLEARING,
        AccountKind.ISSUANCE,
        AccountKind.PAYOUTS,
    ):
        assert shard_count_for(kind, False) == BALANCE_SHARDS


# --- holds -----------------------------------------------------------------------------------


def _hold(amount: int = 1000, ttl: int = 60) -> Hold:
    return Hold(
        branch=TccBranch("gtx-1", "payment"),
        account_id="a",
        destination_account_id="b",
        unit="USD",
        amount=amount,
        expires_at=NOW + timedelta(seconds=ttl),
        created_at=NOW,
    )


def test_confirm_in_full_or_in_part_releases_the_whole_hold():
    hold = _hold()
    assert hold.reservation() == BalanceChange("a", 0, 1000)
    assert hold.confirm(0, NOW) == 1000
    assert (hold.state, hold.confirmed_amount) == (HoldState.CONFIRMED, 1000)
    assert hold.transfer_id == confirm_transfer_id(hold.branch)
    partial = _hold()
    assert partial.confirm(300, NOW) == 300
    assert partial.release() == BalanceChange("a", 0, -1000)


def test_confirm_cannot_exceed_the_hold():
    with pytest.raises(ValidationError):
        _hold().confirm(1001, NOW)


def test_a_hold_resolves_once():
    confirmed = _hold()
    confirmed.confirm(0, NOW)
    with pytest.raises(HoldAlreadyResolved):
        confirmed.confirm(0, NOW)
    with pytest.raises(HoldAlreadyResolved):
        confirmed.cancel(NOW)
    cancelled = _hold()
    assert cancelled.cancel(NOW) is True
    with pytest.raises(HoldAlreadyResolved):
        cancelled.confirm(0, NOW)
    with pytest.raises(HoldAlreadyResolved):
        cancelled.expire(NOW + timedelta(days=1))


def test_expiry():
    hold = _hold(ttl=60)
    with pytest.raises(HirepayError):
        hold.expire(NOW + timedelta(seconds=59))
    with pytest.raises(HoldExpired):
        hold.confirm(0, NOW + timedelta(seconds=60))
    hold.expire(NOW + timedelta(seconds=60))
    assert hold.state is HoldState.EXPIRED
    # a Cancel after the expiry succeeds without releasing anything twice
    assert hold.cancel(NOW + timedelta(seconds=61)) is False
    assert hold.state is HoldState.EXPIRED
    with pytest.raises(HoldAlreadyResolved):
        hold.confirm(0, NOW)


def test_hold_ttl_bounds():
    assert hold_ttl(0) == timedelta(seconds=900)
    assert hold_ttl(30 * 86400) == timedelta(days=30)
    for bad in (-1, 30 * 86400 + 1):
        with pytest.raises(ValidationError):
            hold_ttl(bad)


def test_client_ids_cannot_collide_with_derived_transfer_ids():
    validate_client_id("order-42_a.b:c@d", "transfer_id")
    with pytest.raises(ValidationError):
        validate_client_id(confirm_transfer_id(TccBranch("g", "b")), "transfer_id")
    for bad in ("", "x" * 129, "has space", "new\nline"):
        with pytest.raises(ValidationError):
            validate_client_id(bad, "transfer_id")


# --- fingerprints ----------------------------------------------------------------------------


def test_fingerprint_names_the_first_mismatched_field():
    stored = fingerprint({"legs": [[1, 2]], "description": "x", "metadata": {"a": "1", "b": "2"}})
    same = fingerprint({"legs": [[1, 2]], "description": "x", "metadata": {"b": "2", "a": "1"}})
    assert first_mismatch(stored, same) is None
    other = fingerprint({"legs": [[1, 3]], "description": "y", "metadata": {}})
    assert first_mismatch(stored, other) == "legs"
    assert first_mismatch(stored, fingerprint({**_fields(), "description": "z"})) == "description"


def _fields() -> dict[str, object]:
    return {"legs": [[1, 2]], "description": "x", "metadata": {"a": "1", "b": "2"}}
