"""A booking round's mark-done on real PostgreSQL (issue 13): whatever the round's size, one SQL
text (its ids are one parameter), so one prepared statement with its generic plan on each pooled
connection; with an expanding IN list each size of round was a statement of its own, prepared and
planned afresh. Only bookings still pending are marked, answered in the order asked: the grants
given, marked done as their rows now are (pay13: the statement returns the ids it marked, not the
rows)."""

from __future__ import annotations

from datetime import UTC, datetime

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.credits import CreditGrant, GrantStatus
from tests.support.payments_helpers import paid_plan_transaction


async def test_rounds_of_any_size_mark_done_with_one_statement_text(sessions, round_trips) -> None:
    now = datetime.now(UTC)
    grants = [CreditGrant.issue(paid_plan_transaction(f"txn_round_{n}"), now) for n in range(7)]
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        for grant in grants:
            await uow.credit_grants.add(grant)
        await uow.commit()
    ids = [g.id for g in grants]
    rounds = [grants[:1], grants[1:3], grants[3:7]]
    done: list[list[str]] = []
    returned: list[CreditGrant] = []
    with round_trips:
        for batch in rounds:
            async with SqlPaymentsUnitOfWork(sessions) as uow:
                # In reverse: the answer follows the order asked, not the table's.
                marked = await uow.credit_grants.mark_done(list(reversed(batch)), now)
                await uow.commit()
            done.append([g.id for g in marked])
            returned += marked
    assert done == [[g.id for g in reversed(batch)] for batch in rounds]
    texts = {sql for sql in round_trips.statements if "UPDATE credit_grants SET status" in sql}
    assert len(texts) == 1, texts  # one prepared statement, whatever the round's size

    # Done already, unknown: left out, nothing changed.
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        nobody = CreditGrant.issue(paid_plan_transaction("txn_nobody"), now)
        again = await uow.credit_grants.mark_done([grants[0], nobody, grants[5]], now)
        await uow.commit()
    assert again == []
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        stored = [await uow.credit_grants.get(grant_id) for grant_id in ids]
    assert all(g is not None and g.status is GrantStatus.DONE for g in stored)
    assert {g.done_at for g in stored if g is not None} == {now}
    # What mark_done answered is each grant exactly as its row now is.
    assert sorted(returned, key=lambda g: g.id) == sorted(stored, key=lambda g: g.id)  # type: ignore[arg-type,return-value]
    assert again == [] and nobody.status is GrantStatus.PENDING
