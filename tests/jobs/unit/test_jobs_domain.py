"""Unit tests of the jobs domain: field validation, the PAY-5 transition table, pricing and policy."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from hirepay_platform.errors import ValidationError
from hirepay_platform.money import Money
from jobs.domain.errors import (
    FeeMismatch,
    InvalidSagaTransition,
    InvalidTransition,
    TermsNotAccepted,
    TermsOutdated,
)
from jobs.domain.model import (
    TRANSITIONS,
    Job,
    JobFields,
    JobStatus,
    PaymentStatus,
    can_transition,
    may_be_live,
    validate_fields,
)
from jobs.domain.posting_saga import (
    PaymentMethod,
    Saga,
    SagaError,
    SagaState,
    confirm_exhausted,
)
from jobs.domain.pricing import PriceList, RefundPolicy, check_expected_amount, check_terms

CATEGORIES = frozenset({"engineering", "design"})
NOW = datetime(2026, 11, 21, tzinfo=UTC)

GOOD = JobFields(
    title="Senior Payments Engineer",
    description="Build the payment backbone of a job marketplace.",
    location="Remote",
    employment_type="full_time",
    category="engineering",
)


def problems(fields: JobFields) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        validate_fields(fields, CATEGORIES)
    assert info.value.reason == "VALIDATION_FAILED"
    return info.value.fields


def test_valid_fields_are_normalized():
    f = validate_fields(
        JobFields(
            title="  Engineer ",
            description=GOOD.description,
            location=" Berlin ",
            employment_type="FULL_TIME",
            category="Engineering",
            salary_min_minor=100,
            salary_max_minor=200,
            salary_currency="eur",
        ),
        CATEGORIES,
    )
    assert (f.title, f.location, f.employment_type, f.category, f.salary_currency) == (
        "Engineer",
        "Berlin",
        "full_time",
        "engineering",
        "EUR",
    )


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"title": "ab"}, "title", "at least 3"),
        ({"title": "x" * 201}, "title", "at most 200"),
        ({"description": "too short"}, "description", "at least 20"),
        ({"location": "  "}, "location", "required"),
        ({"employment_type": ""}, "employment_type", "required"),
        ({"employment_type": "freelance"}, "employment_type", "one of"),
        ({"category": ""}, "category", "required"),
        ({"category": "astrology"}, "category", "one of"),
        ({"salary_min_minor": -1}, "salary_min_minor", "negative"),
        ({"salary_max_minor": -5}, "salary_max_minor", "negative"),
        (
            {"salary_min_minor": 500, "salary_max_minor": 100, "salary_currency": "USD"},
            "salary_min_minor",
            "exceed",
        ),
        ({"salary_min_minor": 100}, "salary_currency", "required"),
        (
            {"salary_max_minor": 100, "salary_currency": "XYZ"},
            "salary_currency",
            "ISO 4217",
        ),
    ],
)
def test_each_field_error(change, field, fragment):
    from dataclasses import replace

    found = problems(replace(GOOD, **change))
    assert field in found
    assert fragment in found[field]


def test_all_problems_reported_at_once():
    found = problems(JobFields())
    assert set(found) == {"title", "description", "location", "employment_type", "category"}


def test_unknown_update_mask_path_is_refused():
    with pytest.raises(ValidationError) as info:
        GOOD.merged(JobFields(title="New"), ["salary"])
    assert "update_mask" in info.value.fields


def test_merge_replaces_only_masked_fields():
    merged = GOOD.merged(JobFields(title="New title"), ["title"])
    assert merged.title == "New title"
    assert merged.description == GOOD.description


ALL = [None, *JobStatus]
ALLOWED = {
    (None, JobStatus.DRAFT),
    (JobStatus.DRAFT, JobStatus.PENDING_PAYMENT),
    (JobStatus.DRAFT, JobStatus.CANCELLED),
    (JobStatus.PENDING_PAYMENT, JobStatus.ACTIVE),
    (JobStatus.PENDING_PAYMENT, JobStatus.PAYMENT_FAILED),
    (JobStatus.PENDING_PAYMENT, JobStatus.CANCELLED),  # the company gives up while it is pending
    (JobStatus.PAYMENT_FAILED, JobStatus.PENDING_PAYMENT),
    (JobStatus.PAYMENT_FAILED, JobStatus.CANCELLED),
    (JobStatus.ACTIVE, JobStatus.EXPIRED),
    (JobStatus.ACTIVE, JobStatus.FILLED),
    (JobStatus.ACTIVE, JobStatus.CANCELLED),
}


def test_table_is_exactly_the_documented_one():
    table = {(f, t) for f, targets in TRANSITIONS.items() for t in targets}
    assert table == ALLOWED


@pytest.mark.parametrize(("from_status", "to_status"), list(itertools.product(ALL, JobStatus)))
def test_every_transition_allowed_or_refused(from_status, to_status):
    allowed = (from_status, to_status) in ALLOWED
    assert can_transition(from_status, to_status) is allowed
    if from_status is None:
        return
    job = Job("job_1", "co_1", GOOD, from_status, NOW, NOW)
    if allowed:
        job.transition(to_status, actor="u", reason="r", now=NOW)
        assert job.status is to_status
        (recorded,) = job.drain_transitions()
        assert (recorded.from_status, recorded.to_status, recorded.actor) == (
            from_status,
            to_status,
            "u",
        )
    else:
        with pytest.raises(InvalidTransition) as info:
            job.transition(to_status, actor="u", reason="r", now=NOW)
        assert info.value.reason == "INVALID_TRANSITION"
        assert job.status is from_status
        assert job.drain_transitions() == []


def test_a_job_cancelled_while_its_payment_is_pending_never_goes_live():
    job = Job("job_1", "co_1", GOOD, JobStatus.PENDING_PAYMENT, NOW, NOW)
    job.transition(JobStatus.CANCELLED, actor="co_1", reason="changed my mind", now=NOW)
    with pytest.raises(InvalidTransition):
        job.activate(payment_id="pay_1", posting_days=30, actor="saga", now=NOW)
    with pytest.raises(InvalidTransition):
        job.fail_payment(reason="PAYMENT_DECLINED", refunded=False, actor="saga", now=NOW)
    assert job.status is JobStatus.CANCELLED and job.posted_at is None
    (recorded,) = job.drain_transitions()
    assert (recorded.from_status, recorded.to_status, recorded.reason) == (
        JobStatus.PENDING_PAYMENT,
        JobStatus.CANCELLED,
        "changed my mind",
    )


def test_only_drafts_and_failed_payments_are_editable():
    for status in JobStatus:
        job = Job("job_1", "co_1", GOOD, status, NOW, NOW)
        if status in (JobStatus.DRAFT, JobStatus.PAYMENT_FAILED):
            job.edit(GOOD, NOW)
        else:
            with pytest.raises(InvalidTransition):
                job.edit(GOOD, NOW)


def test_activation_sets_posting_period():
    job = Job("job_1", "co_1", GOOD, JobStatus.PENDING_PAYMENT, NOW, NOW)
    job.activate(payment_id="pay_1", posting_days=30, actor="saga", now=NOW)
    assert job.posted_at == NOW
    assert job.expires_at == NOW + timedelta(days=30)


PRICES = PriceList(
    fees={"default": {"USD": 9900}, "engineering": {"USD": 14900, "EUR": 13900}},
    categories=CATEGORIES,
)


def test_fees_come_from_the_price_list():
    assert PRICES.fee("engineering") == Money(14900, "USD")
    assert PRICES.fee("engineering", "EUR") == Money(13900, "EUR")
    assert PRICES.fee("design") == Money(9900, "USD")
    assert PRICES.fee_for_method("design", "credits") == Money(500, "JOB_CREDIT")
    with pytest.raises(ValidationError):
        PRICES.fee("design", "EUR")


def test_expected_amount_must_equal_fee():
    check_expected_amount(Money(14900, "USD"), None)
    check_expected_amount(Money(14900, "USD"), Money(14900, "USD"))
    with pytest.raises(FeeMismatch) as info:
        check_expected_amount(Money(14900, "USD"), Money(100, "USD"))
    assert info.value.metadata["fee_amount_minor"] == "14900"
    with pytest.raises(FeeMismatch):
        check_expected_amount(Money(14900, "USD"), Money(14900, "EUR"))


def test_terms_must_be_accepted_and_current():
    check_terms(True, "", "2026-11")
    check_terms(True, "2026-11", "2026-11")
    with pytest.raises(TermsNotAccepted):
        check_terms(False, "2026-11", "2026-11")
    with pytest.raises(TermsOutdated) as info:
        check_terms(True, "2025-01", "2026-11")
    assert info.value.metadata["terms_version"] == "2026-11"


def test_refund_policy():
    policy = RefundPolicy(full_refund_within_hours=24, late_refund_percent=50)
    assert policy.refund_amount(9900, NOW, NOW + timedelta(hours=23)) == 9900
    assert policy.refund_amount(9900, NOW, NOW + timedelta(hours=25)) == 4950
    assert RefundPolicy(24, 0).refund_amount(9900, NOW, NOW + timedelta(days=2)) == 0
    assert policy.refund_amount(0, NOW, NOW) == 0


def _saga(state):
    return Saga("saga_1", "co_1", "key", "fp", "co_1", state, PaymentMethod.CARD, NOW, NOW, NOW)


def test_saga_moves_only_along_its_transition_table():
    failure = SagaError("failed_precondition", "PAYMENT_DECLINED", "declined")
    saga = _saga(SagaState.TRYING)
    saga.start_confirming(NOW)
    # Confirming: the money is being taken; the job goes live only once it is (PAY-4).
    assert saga.state is SagaState.CONFIRMING and not saga.activated and not saga.captured
    saga.complete(NOW)
    assert saga.activated and saga.captured
    assert saga.state.final and saga.finished_at == NOW and saga.next_attempt_at is None
    with pytest.raises(InvalidSagaTransition) as info:
        saga.start_cancelling(failure, NOW)
    assert info.value.reason == "INVALID_SAGA_TRANSITION"
    assert saga.state is SagaState.COMPLETED and saga.failure is None
    with pytest.raises(InvalidSagaTransition):
        _saga(SagaState.CANCELLING).finish(SagaState.CONFIRMING, NOW)
    for state, allowed in _saga(SagaState.TRYING).TRANSITIONS.items():
        if state.final:
            assert allowed <= {SagaState.REFUNDING}  # only money found taken reopens a saga


def test_saga_refund_of_a_live_posting_waits_for_its_confirm():
    confirming = _saga(SagaState.CONFIRMING)
    confirming.request_refund(100, "requested_by_customer", NOW)
    assert confirming.state is SagaState.CONFIRMING and confirming.refund_amount_minor == 100
    done = _saga(SagaState.COMPLETED)
    done.request_refund(100, "requested_by_customer", NOW)
    assert done.state is SagaState.REFUNDING and done.next_attempt_at == NOW


def _pending_job() -> Job:
    job = Job("job_1", "co_1", GOOD, JobStatus.PENDING_PAYMENT, NOW, NOW, saga_id="saga_1")
    job.payment_status = PaymentStatus.PENDING
    return job


def test_a_job_may_be_live_only_with_its_money_taken():
    job = _pending_job()
    assert not may_be_live(job)
    job.payment_id = "pay_1"
    assert not may_be_live(job)  # authorized is not paid
    job.payment_status = PaymentStatus.COMPLETED
    assert may_be_live(job)
    job.payment_status = PaymentStatus.REFUNDED
    assert not may_be_live(job)


def test_activate_records_the_completed_payment_and_refuses_without_one():
    job = _pending_job()
    job.activate(payment_id="pay_1", posting_days=30, actor="saga", now=NOW)
    assert job.status is JobStatus.ACTIVE and may_be_live(job)
    assert (job.payment_id, job.payment_status) == ("pay_1", PaymentStatus.COMPLETED)
    nameless = _pending_job()
    with pytest.raises(InvalidTransition):
        nameless.activate(payment_id="", posting_days=30, actor="saga", now=NOW)
    assert nameless.status is JobStatus.PENDING_PAYMENT and not nameless.pending


def test_a_refused_confirm_ends_after_a_bounded_number_of_refusals():
    saga = _saga(SagaState.CONFIRMING)
    later = NOW + timedelta(days=1)
    kw = {"max_refusals": 3, "give_up_at": later, "now": NOW}
    assert not confirm_exhausted(saga, permanent=True, **kw)
    saga.attempts = 2  # two refusals so far: the third ends it
    assert confirm_exhausted(saga, permanent=True, **kw)
    # A transient failure is retried however often, until the payment's deadline.
    saga.attempts = 50
    assert not confirm_exhausted(saga, permanent=False, **kw)
    assert confirm_exhausted(saga, permanent=False, **{**kw, "now": later})


def test_each_saga_state_counts_its_own_attempts():
    saga = _saga(SagaState.TRYING)
    saga.attempts = 4
    saga.start_confirming(NOW)
    assert saga.attempts == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("title", "\u200b\u200b\u200b"),
        ("title", "a\u200b\u200db"),
        ("description", "\u200b" * 40),
        ("location", "\ufeff\u2060"),
    ],
)
def test_invisible_characters_do_not_count_toward_a_minimum_length(name: str, value: str):
    # A direct gRPC caller gets the same rule as the gateway: zero-width text is not text.
    assert name in problems(replace(GOOD, **{name: value}))
