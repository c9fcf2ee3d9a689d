"""Use cases against the in-memory unit of work: idempotency, the TCC guard, holds, expiry."""

from __future__ import annotations

import pytest

from hirepay_platform.errors import ValidationError
from hirepay_platform.tcc import IdempotencyMismatch, TccBranch
from wallet.domain import commands as c
from wallet.domain.errors import (
    AccountNotFound,
    HoldAlreadyResolved,
    HoldCancelled,
    HoldExpired,
    HoldNotFound,
    InsufficientFunds,
    TransferNotFound,
    UnitMismatch,
)
from wallet.domain.holds import HoldState
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h


async def _open(deps, owner: str, kind=AccountKind.USER, unit="USD", allow_negative=False) -> str:
    result = await h.open_account(c.OpenAccount(owner, unit, kind, allow_negative), deps)
    return result.account.id


async def _balance(deps, account_id: str) -> tuple[int, int, int]:
    account = await h.get_account(c.GetAccount(account_id), deps)
    return account.balance.posted, account.balance.pending, account.balance.available


@pytest.fixture
async def accounts(deps):
    """Clearing (may go negative), revenue, and two users, Alice funded with 10000."""
    ids = {
        "clearing": await _open(
            deps, "platform", AccountKind.PROVIDER_CLEARING, allow_negative=True
        ),
        "revenue": await _open(deps, "platform", AccountKind.PLATFORM_REVENUE),
        "alice": await _open(deps, "alice"),
        "bob": await _open(deps, "bob"),
    }
    await h.transfer(
        c.Transfer("fund-alice", (Leg(ids["clearing"], ids["alice"], 10_000, "USD"),)), deps
    )
    return ids


async def test_open_account_is_idempotent_on_owner_unit_and_kind(deps):
    first = await h.open_account(c.OpenAccount("carol", "EUR", AccountKind.USER), deps)
    again = await h.open_account(c.OpenAccount("carol", "EUR", AccountKind.USER), deps)
    assert first.created and not again.created
    assert again.account.id == first.account.id
    with pytest.raises(IdempotencyMismatch) as caught:
        await h.open_account(c.OpenAccount("carol", "EUR", AccountKind.USER, True), deps)
    assert caught.value.metadata["field"] == "allow_negative"
    with pytest.raises(ValidationError):
        await h.open_account(c.OpenAccount("carol", "XXX", AccountKind.USER), deps)
    # owners are upstream user ids, e.g. JWT subjects
    assert (await h.open_account(c.OpenAccount("auth0|42", "USD", AccountKind.USER), deps)).created
    for bad in ("", "has space", "x" * 129):
        with pytest.raises(ValidationError):
            await h.open_account(c.OpenAccount(bad, "USD", AccountKind.USER), deps)


async def test_transfer_moves_money_and_a_retry_replays_it(deps, accounts):
    cmd = c.Transfer(
        "t-1", (Leg(accounts["alice"], accounts["bob"], 2500, "USD"),), "rent", {"k": "v"}
    )
    first = await h.transfer(cmd, deps)
    again = await h.transfer(cmd, deps)
    assert not first.replayed and again.replayed
    assert again.transfer == first.transfer
    assert await _balance(deps, accounts["alice"]) == (7500, 0, 7500)
    assert await _balance(deps, accounts["bob"]) == (2500, 0, 2500)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 2501}, "legs"),
        ({"description": "other"}, "description"),
        ({"metadata": {"k": "w"}}, "metadata"),
    ],
)
async def test_same_transfer_id_with_other_fields_is_refused_naming_the_field(
    deps, accounts, change, field
):
    leg = Leg(accounts["alice"], accounts["bob"], 2500, "USD")
    await h.transfer(c.Transfer("t-2", (leg,), "rent", {"k": "v"}), deps)
    other_leg = Leg(leg.from_account_id, leg.to_account_id, change.get("amount", 2500), "USD")
    cmd = c.Transfer(
        "t-2", (other_leg,), change.get("description", "rent"), change.get("metadata", {"k": "v"})
    )
    with pytest.raises(IdempotencyMismatch) as caught:
        await h.transfer(cmd, deps)
    assert caught.value.metadata["field"] == field
    assert await _balance(deps, accounts["bob"]) == (2500, 0, 2500)


async def test_a_refused_transfer_changes_nothing_and_its_id_stays_free(deps, accounts):
    too_much = c.Transfer("t-3", (Leg(accounts["bob"], accounts["alice"], 1, "USD"),))
    with pytest.raises(InsufficientFunds) as caught:
        await h.transfer(too_much, deps)
    assert caught.value.metadata["account_id"] == accounts["bob"]
    assert await _balance(deps, accounts["alice"]) == (10_000, 0, 10_000)
    with pytest.raises(TransferNotFound):
        await h.get_transfer(c.GetTransfer("t-3"), deps)
    # once Bob has money, the same id goes through
    await h.transfer(
        c.Transfer("fund-bob", (Leg(accounts["alice"], accounts["bob"], 5, "USD"),)), deps
    )
    assert not (await h.transfer(too_much, deps)).replayed


async def test_multi_leg_transfer_is_all_or_nothing(deps, accounts):
    legs = (
        Leg(accounts["alice"], accounts["bob"], 4000, "USD"),
        Leg(accounts["bob"], accounts["revenue"], 5000, "USD"),  # Bob only has the 4000
    )
    with pytest.raises(InsufficientFunds):
        await h.transfer(c.Transfer("t-4", legs), deps)
    assert await _balance(deps, accounts["alice"]) == (10_000, 0, 10_000)
    assert await _balance(deps, accounts["bob"]) == (0, 0, 0)


async def test_unknown_accounts_and_units_are_refused(deps, accounts):
    eur = await _open(deps, "alice", unit="EUR")
    with pytest.raises(UnitMismatch):
        await h.transfer(c.Transfer("t-5", (Leg(accounts["alice"], eur, 1, "USD"),)), deps)
    ghost = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(AccountNotFound):
        await h.transfer(c.Transfer("t-6", (Leg(accounts["alice"], ghost, 1, "USD"),)), deps)
    with pytest.raises(ValidationError):
        await h.transfer(c.Transfer("t-7", (Leg(accounts["alice"], "not-a-uuid", 1, "USD"),)), deps)


async def test_split_transfer_pays_the_fee_and_the_remainder_explicitly(deps, accounts):
    cmd = c.SplitTransfer(
        "sp-1",
        accounts["alice"],
        999,
        "USD",
        (Share(accounts["revenue"], 1000), Share(accounts["bob"], 9000)),
        accounts["bob"],
    )
    result = await h.split_transfer(cmd, deps)
    amounts = {e.account_id: e.amount for e in result.transfer.entries}
    assert amounts == {accounts["alice"]: -999, accounts["revenue"]: 99, accounts["bob"]: 900}
    assert (await _balance(deps, accounts["revenue"]))[0] == 99
    assert (await h.split_transfer(cmd, deps)).replayed


async def test_a_debit_of_the_sharded_revenue_account_is_checked_against_the_shard_sum(
    deps, accounts
):
    for i in range(5):  # fees land on several shards
        leg = Leg(accounts["alice"], accounts["revenue"], 10, "USD")
        await h.transfer(c.Transfer(f"fee-{i}", (leg,)), deps)
    assert (await _balance(deps, accounts["revenue"]))[0] == 50
    with pytest.raises(InsufficientFunds):
        leg = Leg(accounts["revenue"], accounts["bob"], 51, "USD")
        await h.transfer(c.Transfer("refund-1", (leg,)), deps)
    await h.transfer(
        c.Transfer("refund-2", (Leg(accounts["revenue"], accounts["bob"], 50, "USD"),)), deps
    )
    assert (await _balance(deps, accounts["revenue"]))[0] == 0


async def test_history_is_paginated_newest_first(deps, accounts):
    for i in range(5):
        await h.transfer(
            c.Transfer(f"h-{i}", (Leg(accounts["alice"], accounts["bob"], i + 1, "USD"),)), deps
        )
    seen, token = [], ""
    while True:
        page = await h.list_entries(c.ListEntries(accounts["bob"], 2, token), deps)
        seen += [e.amount for e in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]
    with pytest.raises(ValidationError):  # a token of another listing is refused
        await h.list_entries(c.ListEntries(accounts["alice"], 2, _token_for(deps, accounts)), deps)


def _token_for(deps, accounts) -> str:
    from hirepay_platform import paging

    return paging.encode_token({"s": f"entries:{accounts['bob']}", "p": 10})


# --- holds and the TCC guard -----------------------------------------------------------------

B = TccBranch("gtx-1", "payment")


def _reserve(accounts, amount=3000, branch=B, ttl=60) -> c.ReserveHold:
    return c.ReserveHold(branch, accounts["alice"], accounts["bob"], amount, "USD", ttl)


async def test_reserve_reduces_available_and_confirm_posts_part_and_releases_the_rest(
    deps, accounts
):
    held = await h.reserve_hold(_reserve(accounts), deps)
    assert held.hold.state is HoldState.PENDING
    assert await _balance(deps, accounts["alice"]) == (10_000, 3000, 7000)
    confirmed = await h.confirm_hold(c.ConfirmHold(B, 1200), deps)
    assert (confirmed.hold.state, confirmed.hold.confirmed_amount) == (HoldState.CONFIRMED, 1200)
    assert await _balance(deps, accounts["alice"]) == (8800, 0, 8800)
    assert await _balance(deps, accounts["bob"]) == (1200, 0, 1200)
    again = await h.confirm_hold(c.ConfirmHold(B, 1200), deps)
    assert again.replayed and again.transfer == confirmed.transfer
    with pytest.raises(IdempotencyMismatch) as caught:
        await h.confirm_hold(c.ConfirmHold(B, 1300), deps)
    assert caught.value.metadata["field"] == "amount_minor"
    with pytest.raises(HoldAlreadyResolved):
        await h.cancel_hold(c.CancelHold(B), deps)
    assert await _balance(deps, accounts["alice"]) == (8800, 0, 8800)


async def test_confirm_can_split_the_posted_amount(deps, accounts):
    await h.reserve_hold(_reserve(accounts, 1001), deps)
    shares = (Share(accounts["revenue"], 1000), Share(accounts["bob"], 9000))
    result = await h.confirm_hold(c.ConfirmHold(B, 0, shares, accounts["revenue"]), deps)
    amounts = {e.account_id: e.amount for e in result.transfer.entries}
    # floor(100.1)=100, floor(900.9)=900, the 1 left over goes to the named remainder account
    assert amounts == {accounts["alice"]: -1001, accounts["revenue"]: 101, accounts["bob"]: 900}


async def test_reserve_cannot_exceed_available_and_repeats_return_the_same_hold(deps, accounts):
    with pytest.raises(InsufficientFunds):
        await h.reserve_hold(_reserve(accounts, 10_001), deps)
    first = await h.reserve_hold(_reserve(accounts, 6000), deps)
    again = await h.reserve_hold(_reserve(accounts, 6000), deps)
    assert again.replayed and again.hold == first.hold
    assert await _balance(deps, accounts["alice"]) == (10_000, 6000, 4000)
    with pytest.raises(IdempotencyMismatch) as caught:
        await h.reserve_hold(_reserve(accounts, 6001), deps)
    assert caught.value.metadata["field"] == "amount"
    # pending holds reduce what the next reservation and transfer may take
    with pytest.raises(InsufficientFunds):
        await h.reserve_hold(_reserve(accounts, 4001, TccBranch("gtx-2", "p")), deps)
    with pytest.raises(InsufficientFunds):
        await h.transfer(
            c.Transfer("t-x", (Leg(accounts["alice"], accounts["bob"], 4001, "USD"),)), deps
        )


async def test_cancel_releases_and_repeats(deps, accounts):
    await h.reserve_hold(_reserve(accounts), deps)
    cancelled = await h.cancel_hold(c.CancelHold(B, "user left"), deps)
    assert cancelled.hold.state is HoldState.CANCELLED and not cancelled.replayed
    again = await h.cancel_hold(c.CancelHold(B, "retry"), deps)
    assert again.replayed and again.hold.state is HoldState.CANCELLED
    assert await _balance(deps, accounts["alice"]) == (10_000, 0, 10_000)
    with pytest.raises(HoldAlreadyResolved):
        await h.confirm_hold(c.ConfirmHold(B), deps)


async def test_null_compensation_then_hanging_try_reserves_nothing(deps, accounts):
    early = await h.cancel_hold(c.CancelHold(B), deps)
    assert early.null_compensation and early.hold is None
    with pytest.raises(HoldCancelled):
        await h.reserve_hold(_reserve(accounts), deps)
    assert await _balance(deps, accounts["alice"]) == (10_000, 0, 10_000)
    with pytest.raises(HoldCancelled):
        await h.confirm_hold(c.ConfirmHold(B), deps)
    again = await h.cancel_hold(c.CancelHold(B), deps)
    assert again.replayed and again.null_compensation
    assert (await h.get_hold(c.GetHold(B), deps)).null_compensation


async def test_confirm_of_an_unknown_branch_is_not_found(deps, accounts):
    with pytest.raises(HoldNotFound):
        await h.confirm_hold(c.ConfirmHold(TccBranch("nope", "x")), deps)
    with pytest.raises(HoldNotFound):
        await h.get_hold(c.GetHold(TccBranch("nope", "x")), deps)


async def test_expired_holds_are_released_once_and_cannot_be_confirmed(deps, accounts, clock):
    await h.reserve_hold(_reserve(accounts, 1000, B, ttl=60), deps)
    await h.reserve_hold(_reserve(accounts, 2000, TccBranch("gtx-2", "p"), ttl=600), deps)
    clock.advance(60)
    with pytest.raises(HoldExpired):
        await h.confirm_hold(c.ConfirmHold(B), deps)
    assert await h.release_expired_holds(c.ReleaseExpiredHolds(batch_size=10), deps) == 1
    assert await h.release_expired_holds(c.ReleaseExpiredHolds(batch_size=10), deps) == 0
    assert await _balance(deps, accounts["alice"]) == (10_000, 2000, 8000)
    with pytest.raises(HoldAlreadyResolved) as caught:
        await h.confirm_hold(c.ConfirmHold(B), deps)
    assert caught.value.metadata["state"] == "expired"
    # the saga's Cancel after the expiry still succeeds, and releases nothing twice
    late = await h.cancel_hold(c.CancelHold(B), deps)
    assert late.hold.state is HoldState.EXPIRED
    assert await _balance(deps, accounts["alice"]) == (10_000, 2000, 8000)
