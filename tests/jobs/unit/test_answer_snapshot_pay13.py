"""The answer a posting request returns is the one its saga stored, without decoding the snapshot
it just made (issue 13, pay13): the same values as the stored JSON gives back, and as a replay
gets; a snapshot read back from storage (a plain dict) is decoded as before."""

from __future__ import annotations

import json

import pytest

from jobs.domain.model import JobStatus
from jobs.domain.posting_saga import TryResult, TryState
from jobs.service_layer import answers
from tests.support.jobs_world import World


def _as_stored(snapshot: dict) -> dict:
    """The snapshot as the sagas table gives it back: its JSON, parsed."""
    return json.loads(json.dumps(snapshot))


@pytest.mark.parametrize("settles", ["now", "later"])
async def test_the_answer_is_what_the_stored_snapshot_holds(settles, monkeypatch):
    decoded: list[dict] = []
    decode = answers.job_from_snapshot

    def counting(data):
        decoded.append(data)
        return decode(data)

    monkeypatch.setattr(answers, "job_from_snapshot", counting)
    w = World()
    if settles == "later":  # the answer stored by the Try's step: the job waits for payment
        w.payments.try_outcome = TryResult(
            TryState.ACTION_REQUIRED, "pay_1", "REQUIRES_ACTION", next_action_url="https://pay/3ds"
        )
    answer = await w.post()
    assert decoded == []  # the request's own answer: not decoded from its snapshot
    stored = w.only_saga().response
    assert stored is not None
    again = answers.answer_from_snapshot(_as_stored(stored), replayed=False)
    assert answer == again
    expected = JobStatus.ACTIVE if settles == "now" else JobStatus.PENDING_PAYMENT
    assert answer.job.status is expected and answer.replayed is False

    replay = await w.post()
    assert decoded  # a replay decodes the stored snapshot
    assert replay.replayed is True
    assert (replay.job, replay.saga_id, replay.payment_id, replay.payment_state) == (
        answer.job,
        answer.saga_id,
        answer.payment_id,
        answer.payment_state,
    )
    assert replay.next_action_url == answer.next_action_url


def test_a_snapshot_read_back_is_decoded():
    made = answers.answer_to_snapshot(
        answers.SagaAnswer(
            job=_job(),
            saga_id="saga_1",
            payment_id="pay_1",
            payment_state="CAPTURED",
            next_action_url="",
        )
    )
    stored = _as_stored(made)
    assert type(stored) is dict and stored == made
    assert answers.answer_from_snapshot(stored, replayed=False) == made.answer  # type: ignore[attr-defined]
    replayed = answers.answer_from_snapshot(made, replayed=True)
    assert replayed.replayed is True and replayed.job == made.answer.job  # type: ignore[attr-defined]


def _job():
    from datetime import UTC, datetime

    from jobs.domain.model import Job
    from tests.support.jobs_world import FIELDS

    return Job.new_draft("job_1", "company_1", FIELDS, "Acme", datetime(2026, 12, 2, tzinfo=UTC))
