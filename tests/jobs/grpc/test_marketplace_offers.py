"""Marketplace jobs, job requests and offers through the real jobs process, against the real
payments (Stripe sandbox), wallet and PostgreSQL: money reserved, captured, split 10% / 90% on the
ledger, concurrent acceptances with exactly one winner, rejection, withdrawal, expiry, and bad
input changing nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay_platform.grpc_status import error_info
from tests.support.jobs_stack import Stack, start_jobs
from tests.support.marketplace import JobsAs, Ledger, User

COINS = pb.FUNDING_SOURCE_COINS


@pytest.fixture(scope="module")
def market_target(stack: Stack, make_service_database: Callable[[str], str]) -> Iterator[str]:
    service = start_jobs(stack, make_service_database("jobs"))
    yield service.target
    service.stop()


@pytest.fixture
async def jobs(market_target: str) -> AsyncIterator[JobsAs]:
    client = JobsAs(market_target)
    yield client
    await client.close()


@pytest.fixture
def ledger(stack: Stack) -> Ledger:
    return Ledger(stack.wallet_stub)


def reason(exc: grpc.RpcError) -> str:
    info = error_info(exc)
    assert info is not None, exc
    return info.reason


def payment(stack: Stack, payment_id: str) -> ppb.Payment:
    return stack.payments_stub.GetPayment(
        ppb.GetPaymentRequest(payment_id=payment_id), timeout=5
    ).payment


def hold(stack: Stack, payment_id: str) -> wpb.Hold:
    global_tx_id, branch_id = payment_id.split("/")
    branch = common_pb2.TccBranch(global_tx_id=global_tx_id, branch_id=branch_id)
    return stack.wallet_stub.GetHold(wpb.GetHoldRequest(branch=branch), timeout=5).hold


async def wait_offer(jobs: JobsAs, user: User, offer_id: str, done, seconds: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        offer = (await jobs.call(user, "GetOffer", pb.GetOfferRequest(offer_id=offer_id))).offer
        if done(offer) or time.monotonic() > deadline:
            return offer
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- jobs and requests


async def test_jobs_and_job_requests(jobs: JobsAs) -> None:
    customer, other, contractor = User.new("customer"), User.new("customer"), User.new("contractor")
    job = await jobs.post_job(customer)
    assert job.status == pb.MarketJob.OPEN and job.customer_id == customer.user_id
    mine = await jobs.call(customer, "ListMyMarketJobs", pb.ListMyMarketJobsRequest())
    assert [j.job_id for j in mine.jobs] == [job.job_id]
    open_jobs = await jobs.call(
        contractor,
        "ListOpenMarketJobs",
        pb.ListOpenMarketJobsRequest(page=common_pb2.PageRequest(page_size=200)),
    )
    assert job.job_id in [j.job_id for j in open_jobs.jobs]

    asked = await jobs.call(
        contractor, "RequestJob", pb.RequestJobRequest(job_id=job.job_id, message="I can do it")
    )
    assert asked.job_request.status == pb.JobRequest.PENDING
    with pytest.raises(grpc.RpcError) as again:
        await jobs.call(contractor, "RequestJob", pb.RequestJobRequest(job_id=job.job_id))
    assert reason(again.value) == "ALREADY_REQUESTED"
    with pytest.raises(grpc.RpcError) as not_theirs:
        await jobs.call(other, "ListJobRequests", pb.ListJobRequestsRequest(job_id=job.job_id))
    assert not_theirs.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as not_customer:
        await jobs.call(contractor, "PostMarketJob", pb.PostMarketJobRequest(title="x"))
    assert not_customer.value.code() is grpc.StatusCode.PERMISSION_DENIED

    listed = await jobs.call(
        customer, "ListJobRequests", pb.ListJobRequestsRequest(job_id=job.job_id)
    )
    assert [r.contractor_id for r in listed.job_requests] == [contractor.user_id]
    request_id = asked.job_request.request_id
    with pytest.raises(grpc.RpcError) as foreign:
        await jobs.call(
            other,
            "DecideJobRequest",
            pb.DecideJobRequestRequest(job_request_id=request_id, accept=True),
        )
    assert foreign.value.code() is grpc.StatusCode.NOT_FOUND
    decided = await jobs.call(
        customer,
        "DecideJobRequest",
        pb.DecideJobRequestRequest(job_request_id=request_id, accept=True),
    )
    assert decided.job_request.status == pb.JobRequest.ACCEPTED
    with pytest.raises(grpc.RpcError) as twice:
        await jobs.call(
            customer,
            "DecideJobRequest",
            pb.DecideJobRequestRequest(job_request_id=request_id, accept=False),
        )
    assert reason(twice.value) == "INVALID_TRANSITION"
    own = await jobs.call(contractor, "ListJobRequests", pb.ListJobRequestsRequest())
    assert [(r.status, r.job_title) for r in own.job_requests] == [
        (pb.JobRequest.ACCEPTED, job.title)
    ]


async def test_job_fields_are_validated(jobs: JobsAs) -> None:
    customer = User.new("customer")
    with pytest.raises(grpc.RpcError) as bad:
        await jobs.call(
            customer, "PostMarketJob", pb.PostMarketJobRequest(title="x", description="y")
        )
    assert reason(bad.value) == "VALIDATION_FAILED"
    assert {"title", "description"} <= set(error_info(bad.value).metadata)


# --------------------------------------------------------------------------- card offers


async def test_a_card_offer_accepted_books_fee_and_escrow_and_releases_the_others(
    jobs: JobsAs, stack: Stack, ledger: Ledger
) -> None:
    customer = User.new("customer")
    winner, loser = User.new("contractor"), User.new("contractor")
    job = await jobs.post_job(customer)
    revenue = ledger.revenue("USD")
    clearing = ledger.clearing("stripe", "USD")
    revenue_before = ledger.balance(revenue).posted_minor
    clearing_before = ledger.balance(clearing).posted_minor

    sent = (await jobs.send_offer(customer, job.job_id, winner, 100_000)).offer
    other = (await jobs.send_offer(customer, job.job_id, loser, 80_000)).offer
    assert sent.state == pb.Offer.PENDING and other.state == pb.Offer.PENDING
    authorized = payment(stack, sent.payment_id)
    assert authorized.state == ppb.Payment.AUTHORIZED and authorized.captured_minor == 0
    assert authorized.metadata["purpose"] == "marketplace"
    received = await jobs.call(winner, "ListOffers", pb.ListOffersRequest())
    assert [o.offer_id for o in received.offers] == [sent.offer_id]

    accepted = await jobs.call(winner, "AcceptOffer", pb.AcceptOfferRequest(offer_id=sent.offer_id))
    assert accepted.offer.state == pb.Offer.ACCEPTED
    engagement = accepted.engagement
    assert engagement.state == pb.Engagement.ASSIGNED
    assert (engagement.amount.amount_minor, engagement.acceptance_fee.amount_minor) == (
        100_000,
        10_000,
    )
    assert engagement.escrow.amount_minor == 90_000
    assert engagement.contractor_id == winner.user_id

    captured = payment(stack, sent.payment_id)
    assert captured.state == ppb.Payment.CAPTURED and captured.captured_minor == 100_000
    assert captured.provider == "stripe"
    escrow = ledger.escrow(engagement.engagement_id, "USD")
    assert escrow == engagement.escrow_account_id
    assert ledger.balance(escrow).posted_minor == 90_000
    assert ledger.balance(revenue).posted_minor - revenue_before == 10_000
    assert ledger.balance(clearing).posted_minor - clearing_before == -100_000
    transfer = stack.wallet_stub.GetTransfer(
        wpb.GetTransferRequest(transfer_id=f"payment:{captured.payment_id}:capture"), timeout=5
    )
    assert transfer is not None

    assigned = (
        await jobs.call(customer, "GetMarketJob", pb.GetMarketJobRequest(job_id=job.job_id))
    ).job
    assert (assigned.status, assigned.contractor_id, assigned.engagement_id) == (
        pb.MarketJob.ASSIGNED,
        winner.user_id,
        engagement.engagement_id,
    )
    lost = await wait_offer(jobs, customer, other.offer_id, lambda o: o.released)
    assert (lost.state, lost.reason, lost.released) == (
        pb.Offer.REJECTED,
        "another_offer_accepted",
        True,
    )
    assert payment(stack, other.payment_id).state == ppb.Payment.VOIDED

    # Accepting twice, and a new offer on an assigned job, change nothing.
    with pytest.raises(grpc.RpcError) as twice:
        await jobs.call(winner, "AcceptOffer", pb.AcceptOfferRequest(offer_id=sent.offer_id))
    assert reason(twice.value) == "INVALID_TRANSITION"
    with pytest.raises(grpc.RpcError) as closed:
        await jobs.send_offer(customer, job.job_id, loser, 5_000)
    assert reason(closed.value) == "JOB_NOT_OPEN"
    assert ledger.balance(escrow).posted_minor == 90_000
    assert ledger.balance(revenue).posted_minor - revenue_before == 10_000


async def test_a_declined_card_reserves_nothing(jobs: JobsAs, stack: Stack) -> None:
    customer, contractor = User.new("customer"), User.new("contractor")
    job = await jobs.post_job(customer)
    with pytest.raises(grpc.RpcError) as declined:
        await jobs.send_offer(
            customer, job.job_id, contractor, 10_000, token="pm_card_chargeDeclined"
        )
    assert reason(declined.value) == "PAYMENT_DECLINED"
    mine = await jobs.call(customer, "ListOffers", pb.ListOffersRequest(job_id=job.job_id))
    assert [o.state for o in mine.offers] == [pb.Offer.FAILED]
    received = await jobs.call(contractor, "ListOffers", pb.ListOffersRequest())
    assert list(received.offers) == []


# --------------------------------------------------------------------------- coins, concurrency


@pytest.mark.parametrize("funding", ["coins", "card"])
async def test_concurrent_acceptances_have_exactly_one_winner(
    jobs: JobsAs, stack: Stack, ledger: Ledger, funding: str
) -> None:
    customer = User.new("customer")
    first, second = User.new("contractor"), User.new("contractor")
    job = await jobs.post_job(customer)
    if funding == "coins":
        wallet = ledger.grant_coins(customer.user_id, 300_000)
        offers = [
            (await jobs.send_offer(customer, job.job_id, c, amount, "COIN", funding=COINS)).offer
            for c, amount in ((first, 100_000), (second, 120_000))
        ]
        assert ledger.balance(wallet).available_minor == 80_000  # both held
    else:
        offers = [
            (await jobs.send_offer(customer, job.job_id, c, amount)).offer
            for c, amount in ((first, 100_000), (second, 120_000))
        ]
    unit = "COIN" if funding == "coins" else "USD"
    revenue = ledger.revenue(unit)
    revenue_before = ledger.balance(revenue).posted_minor

    results = await asyncio.gather(
        jobs.call(first, "AcceptOffer", pb.AcceptOfferRequest(offer_id=offers[0].offer_id)),
        jobs.call(second, "AcceptOffer", pb.AcceptOfferRequest(offer_id=offers[1].offer_id)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], grpc.RpcError)
    assert reason(lost[0]) in ("JOB_ALREADY_TAKEN", "INVALID_TRANSITION")
    winner = won[0]
    assert winner.offer.state == pb.Offer.ACCEPTED
    amount = winner.offer.amount.amount_minor
    loser = next(o for o in offers if o.offer_id != winner.offer.offer_id)

    released = await wait_offer(jobs, customer, loser.offer_id, lambda o: o.released)
    assert (released.state, released.released) == (pb.Offer.REJECTED, True)
    escrow = ledger.escrow(winner.engagement.engagement_id, unit)
    assert ledger.balance(escrow).posted_minor == amount - amount // 10
    assert ledger.balance(revenue).posted_minor - revenue_before == amount // 10
    if funding == "coins":
        assert hold(stack, loser.payment_id).state == wpb.Hold.CANCELLED
        assert hold(stack, winner.offer.payment_id).state == wpb.Hold.CONFIRMED
        after = ledger.balance(wallet)
        assert (after.posted_minor, after.pending_minor, after.available_minor) == (
            300_000 - amount,
            0,
            300_000 - amount,
        )
    else:
        assert payment(stack, loser.payment_id).state == ppb.Payment.VOIDED
        assert payment(stack, winner.offer.payment_id).captured_minor == amount
    job_now = (
        await jobs.call(customer, "GetMarketJob", pb.GetMarketJobRequest(job_id=job.job_id))
    ).job
    assert job_now.contractor_id == winner.offer.contractor_id


async def test_short_coins_answer_insufficient_funds_and_hold_nothing(
    jobs: JobsAs, ledger: Ledger
) -> None:
    customer, contractor = User.new("customer"), User.new("contractor")
    wallet = ledger.grant_coins(customer.user_id, 500)
    job = await jobs.post_job(customer)
    with pytest.raises(grpc.RpcError) as short:
        await jobs.send_offer(customer, job.job_id, contractor, 501, "COIN", funding=COINS)
    assert reason(short.value) == "INSUFFICIENT_FUNDS"
    balance = ledger.balance(wallet)
    assert (balance.posted_minor, balance.pending_minor) == (500, 0)


# --------------------------------------------------------------------------- reject, withdraw


async def test_a_rejected_or_withdrawn_offer_releases_its_money(
    jobs: JobsAs, stack: Stack, ledger: Ledger
) -> None:
    customer, contractor = User.new("customer"), User.new("contractor")
    wallet = ledger.grant_coins(customer.user_id, 10_000)
    job = await jobs.post_job(customer)
    one = (
        await jobs.send_offer(customer, job.job_id, contractor, 4_000, "COIN", funding=COINS)
    ).offer
    two = (
        await jobs.send_offer(customer, job.job_id, contractor, 5_000, "COIN", funding=COINS)
    ).offer
    assert ledger.balance(wallet).available_minor == 1_000

    rejected = await jobs.call(
        contractor, "RejectOffer", pb.RejectOfferRequest(offer_id=one.offer_id)
    )
    assert (rejected.offer.state, rejected.offer.released) == (pb.Offer.REJECTED, True)
    withdrawn = await jobs.call(
        customer, "WithdrawOffer", pb.WithdrawOfferRequest(offer_id=two.offer_id)
    )
    assert (withdrawn.offer.state, withdrawn.offer.released) == (pb.Offer.WITHDRAWN, True)
    assert hold(stack, one.payment_id).state == wpb.Hold.CANCELLED
    assert hold(stack, two.payment_id).state == wpb.Hold.CANCELLED
    balance = ledger.balance(wallet)
    assert (balance.posted_minor, balance.pending_minor, balance.available_minor) == (
        10_000,
        0,
        10_000,
    )
    with pytest.raises(grpc.RpcError) as late:
        await jobs.call(contractor, "AcceptOffer", pb.AcceptOfferRequest(offer_id=one.offer_id))
    assert reason(late.value) == "INVALID_TRANSITION"
    job_now = (
        await jobs.call(customer, "GetMarketJob", pb.GetMarketJobRequest(job_id=job.job_id))
    ).job
    assert job_now.status == pb.MarketJob.OPEN


# --------------------------------------------------------------------------- bad input


async def test_bad_offers_are_refused_and_change_nothing(jobs: JobsAs, ledger: Ledger) -> None:
    customer, stranger = User.new("customer"), User.new("customer")
    contractor, other_contractor = User.new("contractor"), User.new("contractor")
    wallet = ledger.grant_coins(customer.user_id, 1_000)
    job = await jobs.post_job(customer)

    for amount in (0, -5):
        with pytest.raises(grpc.RpcError) as bad:
            await jobs.send_offer(customer, job.job_id, contractor, amount)
        assert reason(bad.value) == "VALIDATION_FAILED"
    with pytest.raises(grpc.RpcError) as wrong_unit:
        await jobs.send_offer(customer, job.job_id, contractor, 100, "USD", funding=COINS)
    assert reason(wrong_unit.value) == "VALIDATION_FAILED"
    with pytest.raises(grpc.RpcError) as foreign_job:
        await jobs.send_offer(stranger, job.job_id, contractor, 100)
    assert foreign_job.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as not_customer:
        await jobs.send_offer(contractor, job.job_id, other_contractor, 100)
    assert not_customer.value.code() is grpc.StatusCode.PERMISSION_DENIED
    none = await jobs.call(customer, "ListOffers", pb.ListOffersRequest(job_id=job.job_id))
    assert list(none.offers) == []

    offer = (
        await jobs.send_offer(customer, job.job_id, contractor, 700, "COIN", funding=COINS)
    ).offer
    for intruder in (other_contractor, stranger):
        for method, request in (
            ("GetOffer", pb.GetOfferRequest(offer_id=offer.offer_id)),
            ("AcceptOffer", pb.AcceptOfferRequest(offer_id=offer.offer_id)),
            ("RejectOffer", pb.RejectOfferRequest(offer_id=offer.offer_id)),
            ("WithdrawOffer", pb.WithdrawOfferRequest(offer_id=offer.offer_id)),
        ):
            with pytest.raises(grpc.RpcError) as denied:
                await jobs.call(intruder, method, request)
            assert denied.value.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.PERMISSION_DENIED,
            ), (intruder, method)
    still = (
        await jobs.call(customer, "GetOffer", pb.GetOfferRequest(offer_id=offer.offer_id))
    ).offer
    assert still.state == pb.Offer.PENDING
    assert ledger.balance(wallet).pending_minor == 700

    # The same idempotency key: the same offer; with another body: refused.
    key = "offer-key-1"
    first = (
        await jobs.send_offer(customer, job.job_id, contractor, 100, "COIN", funding=COINS, key=key)
    ).offer
    again = (
        await jobs.send_offer(customer, job.job_id, contractor, 100, "COIN", funding=COINS, key=key)
    ).offer
    assert again.offer_id == first.offer_id
    with pytest.raises(grpc.RpcError) as mismatch:
        await jobs.send_offer(customer, job.job_id, contractor, 200, "COIN", funding=COINS, key=key)
    assert reason(mismatch.value) == "IDEMPOTENCY_MISMATCH"
    assert ledger.balance(wallet).pending_minor == 800


# --------------------------------------------------------------------------- expiry


async def test_offers_expire_and_are_released(
    stack: Stack, make_service_database: Callable[[str], str], ledger: Ledger
) -> None:
    database = await asyncio.to_thread(make_service_database, "jobs")
    service = await asyncio.to_thread(start_jobs, stack, database, JOBS_OFFER_VALIDITY_SECONDS="2")
    client = JobsAs(service.target)
    try:
        customer, contractor = User.new("customer"), User.new("contractor")
        wallet = ledger.grant_coins(customer.user_id, 3_000)
        job = await client.post_job(customer)
        coins = (
            await client.send_offer(customer, job.job_id, contractor, 1_000, "COIN", funding=COINS)
        ).offer
        card = (await client.send_offer(customer, job.job_id, contractor, 2_500)).offer
        # Both were reserved (the expiry may already have run for the first: 2 s is short).
        assert coins.state == card.state == pb.Offer.PENDING
        for offer in (coins, card):
            expired = await wait_offer(client, customer, offer.offer_id, lambda o: o.released)
            assert (expired.state, expired.reason, expired.released) == (
                pb.Offer.EXPIRED,
                "expired",
                True,
            )
        assert hold(stack, coins.payment_id).state == wpb.Hold.CANCELLED
        assert payment(stack, card.payment_id).state == ppb.Payment.VOIDED
        balance = ledger.balance(wallet)
        assert (balance.posted_minor, balance.pending_minor) == (3_000, 0)
        with pytest.raises(grpc.RpcError) as late:
            await client.call(
                contractor, "AcceptOffer", pb.AcceptOfferRequest(offer_id=coins.offer_id)
            )
        assert reason(late.value) == "INVALID_TRANSITION"
    finally:
        await client.close()
        service.stop()


# --------------------------------------------------------------------------- crash and recovery


@pytest.mark.parametrize(("step", "funding"), [("offer_capture", "card"), ("offer_book", "coins")])
async def test_an_acceptance_killed_mid_way_is_finished_by_recovery(
    stack: Stack,
    make_service_database: Callable[[str], str],
    ledger: Ledger,
    step: str,
    funding: str,
) -> None:
    """kill -9 right after the capture (nothing recorded) or after the booking (job not assigned):
    the restarted service's recovery worker finishes the acceptance, booking the money once."""
    from tests.support import jobs_process

    database = await asyncio.to_thread(make_service_database, "jobs")
    service = await asyncio.to_thread(start_jobs, stack, database, crash_after=step)
    client = JobsAs(service.target)
    try:
        customer, winner, loser = (
            User.new("customer"),
            User.new("contractor"),
            User.new("contractor"),
        )
        unit = "COIN" if funding == "coins" else "USD"
        if funding == "coins":
            wallet = ledger.grant_coins(customer.user_id, 50_000)
        job = await client.post_job(customer)
        kind = COINS if funding == "coins" else pb.FUNDING_SOURCE_CARD
        offer = (
            await client.send_offer(customer, job.job_id, winner, 20_000, unit, funding=kind)
        ).offer
        other = (
            await client.send_offer(customer, job.job_id, loser, 30_000, unit, funding=kind)
        ).offer
        revenue = ledger.revenue(unit)
        revenue_before = ledger.balance(revenue).posted_minor
        with pytest.raises(grpc.RpcError) as died:
            await client.call(winner, "AcceptOffer", pb.AcceptOfferRequest(offer_id=offer.offer_id))
        assert died.value.code() is grpc.StatusCode.UNAVAILABLE
        await client.close()
        assert service.process.popen is not None
        assert await asyncio.to_thread(service.process.popen.wait, 10) == 137
        service.process.env = {**service.process.env, jobs_process.CRASH_AFTER_STEP: ""}
        service.process.popen = None
        await asyncio.to_thread(service.process.start, 30)
        client = JobsAs(service.target)

        done = await wait_offer(
            client, customer, offer.offer_id, lambda o: o.state == pb.Offer.ACCEPTED, 30
        )
        assert done.state == pb.Offer.ACCEPTED
        lost = await wait_offer(client, customer, other.offer_id, lambda o: o.released, 30)
        assert (lost.state, lost.released) == (pb.Offer.REJECTED, True)
        escrow = ledger.escrow(done.engagement_id, unit)
        assert ledger.balance(escrow).posted_minor == 18_000
        assert ledger.balance(revenue).posted_minor - revenue_before == 2_000
        if funding == "coins":
            balance = ledger.balance(wallet)
            assert (balance.posted_minor, balance.pending_minor) == (30_000, 0)
        else:
            assert payment(stack, offer.payment_id).captured_minor == 20_000
            assert payment(stack, other.payment_id).state == ppb.Payment.VOIDED
        assigned = (
            await client.call(customer, "GetMarketJob", pb.GetMarketJobRequest(job_id=job.job_id))
        ).job
        assert (assigned.status, assigned.engagement_id) == (
            pb.MarketJob.ASSIGNED,
            done.engagement_id,
        )
    finally:
        await client.close()
        service.stop()
