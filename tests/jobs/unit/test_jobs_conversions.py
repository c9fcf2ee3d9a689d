"""Unit tests of the named conversions between the jobs contract and the domain."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime

import pytest

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay_platform import identity
from jobs.adapters.repositories import job_to_values
from jobs.domain.model import Job, JobFields, JobStatus, PaymentStatus
from jobs.domain.posting_saga import TryState
from jobs.entrypoints import conversions as conv
from jobs.service_layer.answers import job_from_snapshot, job_to_snapshot

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
FIELDS = JobFields("Engineer", "x" * 30, "Remote", "contract", "engineering", 1, 2, "USD")


def test_fields_round_trip():
    assert conv.fields_from_proto(conv.fields_to_proto(FIELDS)) == FIELDS
    assert conv.fields_from_proto(pb.JobFields()).employment_type == ""


def test_job_to_proto_carries_payment_facts():
    job = Job("job_1", "co_1", FIELDS, JobStatus.ACTIVE, NOW, NOW, payment_id="pay_1")
    job.payment_status = PaymentStatus.COMPLETED
    job.payment_amount_minor, job.payment_currency = 14900, "USD"
    job.posted_at = NOW
    message = conv.job_to_proto(job)
    assert message.status == pb.Job.ACTIVE and message.payment_status == pb.Job.COMPLETED
    assert message.payment_amount.amount_minor == 14900
    assert message.posted_at.ToDatetime(tzinfo=UTC) == NOW
    assert not message.HasField("expires_at")


def test_snapshot_round_trip_is_exact():
    job = Job("job_1", "co_1", FIELDS, JobStatus.PENDING_PAYMENT, NOW, NOW, saga_id="saga_1")
    job.payment_status = PaymentStatus.PENDING
    assert job_from_snapshot(job_to_snapshot(job)) == job


def test_snapshot_names_every_field_of_a_job():
    # JobFields.values names the fields one by one (issue 13): a field added to JobFields and not
    # to values() would be lost from stored answers and from the job's row.
    job = Job("job_1", "co_1", FIELDS, JobStatus.ACTIVE, NOW, NOW)
    assert FIELDS.values() == asdict(FIELDS)
    assert job_to_snapshot(job)["fields"] == asdict(FIELDS)
    assert job_to_values(job).items() >= asdict(FIELDS).items()


def test_fingerprint_ignores_key_and_actor_but_not_the_body():
    a = pb.CreateJobWithPaymentRequest(
        request_id="k1",
        actor=common_pb2.Actor(user_id="co_1", role="company"),
        draft_id="job_1",
        payment=pb.PaymentChoice(method="card", payment_method="pm_card_visa"),
        accept_terms=True,
    )
    b = pb.CreateJobWithPaymentRequest()
    b.CopyFrom(a)
    b.request_id = "k2"
    assert conv.request_fingerprint(a) == conv.request_fingerprint(b)
    b.payment.payment_method = "pm_card_mastercard"
    assert conv.request_fingerprint(a) != conv.request_fingerprint(b)
    b.request_fingerprint = "gateway-hash"
    assert conv.request_fingerprint(b) == "gateway-hash"


def test_settlement_event_type_decides_the_state():
    payment = ppb.Payment(
        payment_id="pay_1",
        branch=common_pb2.TccBranch(global_tx_id="saga_1", branch_id="payment"),
        state=ppb.Payment.CAPTURED,
    )
    event = conv.settlement_event_from_proto(
        ppb.SettlementEvent(event_id="e1", cursor=5, type="payment.authorized", payment=payment)
    )
    assert (event.global_tx_id, event.branch_id, event.cursor) == ("saga_1", "payment", 5)
    assert event.result.state is TryState.RESERVED
    other = conv.settlement_event_from_proto(
        ppb.SettlementEvent(event_id="e2", cursor=6, type="transaction.succeeded")
    )
    assert other.global_tx_id == ""


@pytest.fixture
def signed_caller() -> Iterator[None]:
    """The caller the platform interceptor verified (the gateway vouching for company co_1)."""
    token = identity.set_current_caller(
        identity.Caller("gateway", identity.Actor("co_1", "Company"))
    )
    yield
    identity.reset_current_caller(token)


def test_the_request_actor_field_is_ignored(signed_caller):
    request = pb.CreateJobWithPaymentRequest(
        request_id="k", actor=common_pb2.Actor(user_id="root", role="admin"), accept_terms=True
    )
    cmd = conv.create_with_payment_from_proto(request)
    assert (cmd.actor.user_id, cmd.actor.role) == ("co_1", "company")


def test_create_command_from_proto(signed_caller):
    request = pb.CreateJobWithPaymentRequest(
        request_id=" k ",
        actor=common_pb2.Actor(user_id="co_1", role="Company"),
        job=conv.fields_to_proto(FIELDS),
        payment=pb.PaymentChoice(
            method="card",
            payment_method="pm_card_visa",
            expected_amount=common_pb2.Money(amount_minor=14900, currency="usd"),
        ),
        accept_terms=True,
    )
    cmd = conv.create_with_payment_from_proto(request)
    assert cmd.request_id == "k" and cmd.actor.role == "company"
    assert cmd.fields == FIELDS and cmd.draft_id == ""
    assert cmd.payment.expected_amount is not None
    assert cmd.payment.expected_amount.currency == "USD"


def test_the_deprecated_actor_conversion_also_returns_the_verified_caller(signed_caller):
    actor = conv.actor_from_proto(common_pb2.Actor(user_id="root", role="admin"))
    assert (actor.user_id, actor.role) == ("co_1", "company")
