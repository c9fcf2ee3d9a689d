"""PostgreSQL repositories of the jobs service and the named conversions between rows and domain."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Executable,
    Row,
    Select,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    extract,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from hirepay_platform.db import HotStatement, autocommit, execute_alone
from hirepay_platform.errors import StaleRow
from hirepay_platform.sql_lists import joined_checked
from hirepay_platform.write_batch import BatchedSession
from jobs.adapters.tables import (
    UNFINISHED_SAGA,
    job_transitions,
    jobs,
    posting_rate_attempts,
    posting_rate_buckets,
    saga_log,
    sagas,
    settlement_cursors,
)
from jobs.domain.model import Job, JobFields, JobStatus, PaymentStatus, Transition
from jobs.domain.posting_saga import (
    PaymentMethod,
    Saga,
    SagaError,
    SagaKind,
    SagaState,
)
from jobs.domain.rate_limits import PostingAttempt

# The reads of the hot path, built once: SQLAlchemy then finds their compiled form by a cache key
# computed once per statement, instead of building and keying a new one per call (issue 13).
# Writes of jobs, sagas and their logs wait in the unit of work's WriteBatch (one statement).
_KEY = "_key"  # the bound parameter of the row's id
_GET_JOB = select(jobs).where(jobs.c.id == bindparam(_KEY))
_LOCK_JOB = _GET_JOB.with_for_update()


def _by_id_probes(table: Table, *, joined: bool) -> Select[Any]:
    """The rows of `table` whose ids are in the parameter `ids`: one statement text
    (prepared once per connection) whatever the number of ids, where an IN list would be a new
    statement, prepared again, per length. Each id is one probe of the primary key (a LATERAL
    subquery kept apart by OFFSET 0, so it cannot be turned into a join): as `id = ANY(:ids)`,
    the generic plan a connection made while the table was small (every fresh database) read
    the whole table on each call for as long as the connection kept it (issue 13)."""
    # hirepay_keys (migration 0011) is unnest with a fixed row estimate, so that the generic
    # plan is kept instead of a custom plan made on every call. `joined`: the ids as one
    # comma-joined string split by PostgreSQL (hirepay_platform.sql_lists), not an array whose
    # every element asyncpg checks in Python (issue 13: the auditor's pages read hundreds).
    array = ARRAY(table.c.id.type)
    given = (
        cast(func.string_to_array(bindparam("ids", type_=Text), literal_column("','")), array)
        if joined
        else bindparam("ids", type_=array)
    )
    ids = func.hirepay_keys(given).table_valued("id")
    key = ids.render_derived(name="k")
    probe = select(table).where(table.c.id == key.c.id).offset(literal_column("0")).lateral("r")
    return select(probe).select_from(key).join(probe, true())


# Jobs by ids (the auditor's pages), like sagas by ids: the ids joined, or as an array when one
# holds a comma or is empty (_by_ids).
_GET_JOBS = _by_id_probes(jobs, joined=True)
_GET_JOBS_ARRAY = _by_id_probes(jobs, joined=False)
_GET_SAGA = select(sagas).where(sagas.c.id == bindparam(_KEY))
_LOCK_SAGA = _GET_SAGA.with_for_update()
# Sagas by ids (the settlement consumer's batch of events, the auditor's pages).
_GET_SAGAS = _by_id_probes(sagas, joined=True)
_GET_SAGAS_ARRAY = _by_id_probes(sagas, joined=False)
# A saga and its job in one round trip (the saga locked, and its job too when asked), each
# column labelled by its table; the lock order is the saga's row, then the job's, as elsewhere.
_SAGA_WITH_JOB = (
    select(
        *(c.label(f"s_{c.name}") for c in sagas.c),
        *(c.label(f"j_{c.name}") for c in jobs.c),
    )
    .join_from(sagas, jobs, jobs.c.id == sagas.c.job_id)
    .where(sagas.c.id == bindparam(_KEY))
)
_LOCK_SAGA_AND_JOB = _SAGA_WITH_JOB.with_for_update()
_LOCK_SAGA_READ_JOB = _SAGA_WITH_JOB.with_for_update(of=sagas)
# Each run hot (db.HotStatement): past SQLAlchemy's execution once warm (issue 13).
_GET_JOB, _LOCK_JOB, _GET_JOBS, _GET_SAGA, _LOCK_SAGA, _GET_SAGAS = map(
    HotStatement, (_GET_JOB, _LOCK_JOB, _GET_JOBS, _GET_SAGA, _LOCK_SAGA, _GET_SAGAS)
)
_GET_JOBS_ARRAY, _GET_SAGAS_ARRAY = map(HotStatement, (_GET_JOBS_ARRAY, _GET_SAGAS_ARRAY))
_LOCK_SAGA_AND_JOB, _LOCK_SAGA_READ_JOB = map(
    HotStatement, (_LOCK_SAGA_AND_JOB, _LOCK_SAGA_READ_JOB)
)


# The columns a row is inserted with: all but its `version`, which starts at its default (0).
_SAGA_COLUMNS = [c for c in sagas.c if c.name != "version"]
_JOB_COLUMNS = [c for c in jobs.c if c.name != "version"]

# The guard of a step written on a saga and job as this process last stored them (see
# lock_with_job's `assumed`): both rows, locked, still at the versions stored. PostgreSQL moves
# a row's version on every UPDATE (migration 0010), so a row at its stored version holds the
# values stored (issue 13: it compared every column of both rows, 59 parameters a step).
_STILL_STORED = (
    select(sagas.c.id)
    .join_from(sagas, jobs, jobs.c.id == sagas.c.job_id)
    .where(
        sagas.c.id == bindparam("g_s_id"),
        sagas.c.version == bindparam("g_s_version", type_=BigInteger),
        jobs.c.id == bindparam("g_j_id"),
        jobs.c.version == bindparam("g_j_version", type_=BigInteger),
    )
    .with_for_update()
)


# The recovery worker's statements and the settlement cursor's (each round of the worker, about
# once a second under load, and each quiet moment of the stream), built once like the reads
# above: building them cost several times the Python of running them (issue 13).
_NOW = bindparam("now", type_=sagas.c.next_attempt_at.type)
_DUE_SAGAS = (
    select(sagas.c.id)
    .where(
        UNFINISHED_SAGA,
        or_(sagas.c.lease_until.is_(None), sagas.c.lease_until < _NOW),
        or_(sagas.c.next_attempt_at.is_(None), sagas.c.next_attempt_at <= _NOW),
    )
    .order_by(sagas.c.next_attempt_at.nulls_first())
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
# Waiting for a settle-later payment is bounded by its own (longer) deadline, not stuck.
_COUNT_STUCK = (
    select(func.count())
    .select_from(sagas)
    .where(
        UNFINISHED_SAGA,
        sagas.c.state != SagaState.AWAITING_SETTLEMENT.value,
        sagas.c.deadline_at < _NOW,
    )
)
# Run hot (db.HotStatement) too: a round that finds nothing due then takes the pool's connection
# without SQLAlchemy's Connection and its greenlets (issue 13: with the escrow worker's due steps,
# an idle round of both 1,454 -> 1,035 Python calls and 34 -> 0 greenlet switches, once a second).
_DUE_SAGAS, _COUNT_STUCK = map(HotStatement, (_DUE_SAGAS, _COUNT_STUCK))
_NEW_CURSOR = pg_insert(settlement_cursors).values(
    consumer=bindparam("consumer"), cursor=bindparam("cursor"), updated_at=func.now()
)
_ADVANCE_CURSOR = _NEW_CURSOR.on_conflict_do_update(
    index_elements=["consumer"],
    set_={
        "cursor": func.greatest(settlement_cursors.c.cursor, _NEW_CURSOR.excluded.cursor),
        "updated_at": func.now(),
    },
)
_HOT_ADVANCE_CURSOR = HotStatement(_ADVANCE_CURSOR)  # (db.HotStatement, issue 13)


# What _by_ids reads: a job or a saga.
_Entity = TypeVar("_Entity", Job, Saga)


async def _by_ids(
    session: BatchedSession,
    statements: tuple[HotStatement, HotStatement],
    ids: Sequence[str],
    read: Callable[[Row], _Entity],
) -> dict[str, _Entity]:
    """The rows of `ids` that exist, read by `read`, by id: one statement, none for no ids.
    `statements` take the ids as one parameter `ids`: comma-joined (sql_lists), or, when an id
    holds a comma or is empty (ids come from events and reports of other services), an array."""
    if not ids:
        return {}
    keys = sorted(set(ids))
    given: str | list[str]
    try:
        statement, given = statements[0], joined_checked(keys)
    except ValueError:  # an id holds a comma or is empty
        statement, given = statements[1], keys
    rows = (await session.execute(statement, {"ids": given})).all()
    return {entity.id: entity for entity in map(read, rows)}


class _Stored:
    """A saga's and its job's column values as this process last read or wrote them, and each
    row's version then (None: unknown, never assumed); `saga_was` and `job_was` are copies of
    the values then, to tell whether the unit of work updated the row since (see `stored`)."""

    __slots__ = ("job", "job_version", "job_was", "saga", "saga_version", "saga_was")

    def __init__(
        self,
        saga: dict[str, Any],
        job: dict[str, Any],
        saga_version: int | None,
        job_version: int | None,
    ) -> None:
        self.saga = saga
        self.job = job
        self.saga_version = saga_version
        self.job_version = job_version
        self.saga_was = dict(saga)
        self.job_was = dict(job)


def _split(row: Row) -> tuple[dict[str, Any], dict[str, Any]]:
    """The saga's and the job's columns of a joined row."""
    saga: dict[str, Any] = {}
    job: dict[str, Any] = {}
    for name, value in row._mapping.items():
        (saga if name.startswith("s_") else job)[name[2:]] = value
    return saga, job


# One attempt on a user's bucket in one statement (issue 13; it was BEGIN + 6 statements + COMMIT):
# lock the bucket (FOR UPDATE returns the newest row, so concurrent attempts of any replica are
# decided one by one), refill it, record the attempt and spend a token, and forget attempts older
# than the idempotency horizon. The attempt's insert is the arbiter of a repeat: ON CONFLICT sees
# a charge committed after this statement's snapshot (a concurrent twin), a plain read would not;
# a repeat spends nothing. The refill is take_token's arithmetic in the same float operations.
# No row: the user has no bucket yet (created full by the caller, then the attempt is re-run).
# Parameters `rl_<name>` (see _attempt_params); also the first CTEs of a posting's first step
# that spends its attempt (_posting_insert).
class _AttemptCtes:
    """The CTEs of one attempt on a bucket: `fresh` (the refilled tokens, before this attempt),
    `charge` (the attempt's id if this statement charged it), `spent` (the tokens left), and
    `forget` (referenced by nothing: add it to the statement)."""

    def __init__(self) -> None:
        buckets, attempts = posting_rate_buckets, posting_rate_attempts
        user = bindparam("rl_user_id", type_=buckets.c.user_id.type)
        attempt = bindparam("rl_attempt_id", type_=attempts.c.attempt_id.type)
        now = bindparam("rl_now", type_=buckets.c.updated_at.type)
        old = (
            select(buckets.c.tokens, buckets.c.updated_at)
            .where(buckets.c.user_id == user)
            .with_for_update()
            .cte("old")
        )
        elapsed = func.greatest(0, extract("epoch", now - old.c.updated_at))
        refilled = old.c.tokens + cast(elapsed, DOUBLE_PRECISION) * bindparam(
            "rl_rate", type_=DOUBLE_PRECISION
        )
        self.fresh = fresh = select(
            func.least(bindparam("rl_full", type_=DOUBLE_PRECISION), refilled).label("tokens")
        ).cte("fresh")
        self.had_token = fresh.c.tokens >= 1
        self.charge = charge = (
            pg_insert(attempts)
            .from_select(
                ["user_id", "attempt_id", "charged_at"],
                select(user, attempt, now).where(attempt != "", self.had_token),
            )
            .on_conflict_do_nothing()
            .returning(attempts.c.attempt_id)
            .cte("charge")
        )
        self.charged = exists(select(charge.c.attempt_id))
        self.forget = (
            delete(attempts)
            .where(
                attempts.c.user_id == user,
                attempts.c.charged_at < bindparam("rl_forget_before", type_=now.type),
                self.charged,
            )
            .cte("forget")
        )
        # The bucket's one row: fresh's tokens as a scalar (fresh is empty only without it).
        tokens = select(fresh.c.tokens).scalar_subquery()
        spends = case((and_(tokens >= 1, or_(attempt == "", self.charged)), 1), else_=0)
        self.spent = (
            update(buckets)
            .where(buckets.c.user_id == user)
            .values(tokens=tokens - spends, updated_at=now)
            .returning(buckets.c.tokens)
            .cte("spent")
        )

    def outcome(self) -> list[Any]:
        """The columns that say what the attempt did: tokens left, had a token, charged."""
        return [
            self.spent.c.tokens.label("tokens"),
            self.had_token.label("had_token"),
            self.charged.label("charged"),
        ]


def _attempt_statement() -> Executable:
    """One attempt alone: (tokens, had_token, charged), no row when the user has no bucket."""
    attempt = _AttemptCtes()
    return (
        select(*attempt.outcome())
        .select_from(attempt.spent)
        .join(attempt.fresh, true())
        .add_cte(attempt.forget)
    )


_TAKE_ATTEMPT = HotStatement(_attempt_statement())  # (db.HotStatement, issue 13)


def _attempt_params(attempt: PostingAttempt) -> dict[str, Any]:
    return {
        "rl_user_id": attempt.user_id,
        "rl_attempt_id": attempt.attempt_id,
        "rl_full": float(attempt.limit),
        "rl_rate": attempt.limit / attempt.window_seconds,
        "rl_now": attempt.now,
        "rl_forget_before": attempt.forget_before,
    }


_failed = sagas.alias("failed")
# A failed saga whose reason counts for PAY-14's abuse rule. The reasons are one parameter: an
# expanding IN would have SQLAlchemy rewrite the statement's text on every call; they are one
# comma-joined string split by PostgreSQL (hirepay_platform.sql_lists: reasons are identifiers,
# never a comma), not an array, whose every element asyncpg checks in Python (issue 13).
_FAILED_FOR_ABUSE = and_(
    _failed.c.failure != literal_column("'null'::jsonb"),  # as ix_sagas_company_failed's
    _failed.c.failure["reason"].astext
    == any_(
        func.string_to_array(
            bindparam("failures_reasons", type_=Text), literal_column("','"), type_=ARRAY(Text)
        )
    ),
)
# The failures_reasons parameter of each set of reasons (one set, PAY-14's), joined once.
_JOINED_REASONS: dict[frozenset[str], str] = {}


def _joined_reasons(reasons: frozenset[str]) -> str:
    joined = _JOINED_REASONS.get(reasons)
    if joined is None:
        joined = _JOINED_REASONS[reasons] = joined_checked(sorted(reasons))
    return joined


# Insert-first on the caller's idempotency key: a twin blocks here, then finds the key taken.
_INSERT_SAGA = (
    pg_insert(sagas)
    .on_conflict_do_nothing(index_elements=["company_id", "request_id"])
    .returning(sagas.c.id)
)
# The insert-first of a posting's saga that also counts its company's recent failed payments
# (PAY-14's abuse rule), in the one round trip (the count is of the rows before this one).
_INSERT_SAGA_COUNTING_FAILURES = (
    pg_insert(sagas)
    .on_conflict_do_nothing(index_elements=["company_id", "request_id"])
    .returning(
        select(func.count())
        .where(
            _failed.c.kind == SagaKind.POSTING.value,
            _failed.c.company_id == bindparam("failures_company_id"),
            _failed.c.created_at >= bindparam("failures_since"),
            _FAILED_FOR_ABUSE,
        )
        .scalar_subquery()
    )
)


# A posting's transitions (two: draft created, pending payment), each row's values bound as they
# are, `t<i>_<column>`, for up to this many rows (one statement per number of rows); more (or
# none) as one array per column, `t_<column>`. asyncpg checks each element of an array parameter
# against abstract classes in Python: the two transitions as arrays cost 24 such checks per
# posting (issue 13; as hirepay_platform.write_batch binds a few rows of one INSERT).
_FEW_TRANSITIONS = 4
_TRANSITION_NAMES = ("job_id", "from_status", "to_status", "actor", "reason", "at")


def _transitions_shape(n: int) -> int:
    """The statement's shape for `n` transitions: their number if bound row by row, else 0."""
    return n if 0 < n <= _FEW_TRANSITIONS else 0


def _transition_rows(n: int) -> Any:
    """The rows of `n` transitions (a shape of _transitions_shape), with their position `t_ord`
    (they are inserted in that order: a job's history keeps the order of its ids)."""
    names = _TRANSITION_NAMES
    if n == 0:
        # dimensions=1: each element one value.
        arrays = [
            bindparam(f"t_{c}", type_=ARRAY(job_transitions.c[c].type, dimensions=1)) for c in names
        ]
        return func.unnest(*arrays).table_valued(*names, with_ordinality="t_ord").render_derived()
    each = [
        select(
            *(bindparam(f"t{i}_{c}", type_=job_transitions.c[c].type).label(c) for c in names),
            literal_column(str(i)).label("t_ord"),
        )
        for i in range(n)
    ]
    return (each[0] if n == 1 else union_all(*each)).subquery("t_rows")


def _transition_params(transitions: Sequence[Transition], params: dict[str, Any]) -> None:
    """The parameters of `transitions` in the shape _transitions_shape gives their number."""
    rows = [transition_to_values(t) for t in transitions]
    if _transitions_shape(len(rows)):
        for i, row in enumerate(rows):
            for column in _TRANSITION_NAMES:
                params[f"t{i}_{column}"] = row[column]
    else:
        for column in _TRANSITION_NAMES:
            params[f"t_{column}"] = [row[column] for row in rows]


def _posting_insert(counting: bool, spending: bool, transitions: int) -> Executable:
    """A posting's whole first step as one statement, which commits by itself (issue 13; it was
    BEGIN + the saga's insert-first + the batch of the rest + COMMIT): the saga inserted first on
    its key, and only if it was (`s`), the job, its transitions and the saga's first log line.
    `counting`: the saga is inserted only while the company's recent failed payments (PAY-14's
    abuse rule, counted from the rows before this one) are below `max_failures`; the count comes
    back. A key already taken (or a blocked company) inserts nothing. `spending`: the posting's
    rate-limit attempt is spent first by the same statement (_AttemptCtes, as alone: charged
    whatever the posting then does) and the saga is inserted only if the bucket had a token; its
    outcome comes back, no row when the user has no bucket yet (then nothing is inserted).
    `transitions`: their shape (_transitions_shape). Built once per shape."""
    failures = (
        select(func.count().label("n"))
        .where(
            _failed.c.kind == SagaKind.POSTING.value,
            _failed.c.company_id == bindparam("failures_company_id"),
            _failed.c.created_at >= bindparam("failures_since"),
            _FAILED_FOR_ABUSE,
        )
        .cte("failures")
        if counting
        else select(literal(0).label("n")).cte("failures")
    )
    saga_row = select(*(bindparam(f"s_{c.name}", type_=c.type) for c in _SAGA_COLUMNS))
    if counting:
        saga_row = saga_row.select_from(failures).where(failures.c.n < bindparam("max_failures"))
    attempt = _AttemptCtes() if spending else None
    if attempt is not None:
        # A refused attempt (no token) inserts nothing: the request is then refused, or, when
        # the attempt was charged before (a retry), the first step is taken alone.
        saga_row = saga_row.where(exists(select(attempt.fresh.c.tokens).where(attempt.had_token)))
    saga = (
        pg_insert(sagas)
        .from_select([c.name for c in _SAGA_COLUMNS], saga_row)
        .on_conflict_do_nothing(index_elements=["company_id", "request_id"])
        .returning(sagas.c.id)
        .cte("s")
    )
    inserted = exists(select(saga.c.id))
    job = insert(jobs).from_select(
        [c.name for c in _JOB_COLUMNS],
        select(*(bindparam(f"j_{c.name}", type_=c.type) for c in _JOB_COLUMNS)).where(inserted),
    )
    rows = _transition_rows(transitions)
    names = _TRANSITION_NAMES
    transitions_insert = insert(job_transitions).from_select(
        list(names),
        select(*(rows.c[n] for n in names)).where(inserted).order_by(rows.c.t_ord),
    )
    log = insert(saga_log).from_select(
        ["saga_id", "step", "detail", "at"],
        select(
            bindparam("s_id", type_=saga_log.c.saga_id.type),
            bindparam("l_step", type_=saga_log.c.step.type),
            bindparam("l_detail", type_=saga_log.c.detail.type),
            bindparam("l_at", type_=saga_log.c.at.type),
        ).where(inserted),
    )
    outcome = select(failures.c.n, inserted.label("inserted")).add_cte(
        job.cte("j"), transitions_insert.cte("t"), log.cte("l")
    )
    if attempt is None:
        return outcome
    return (
        outcome.add_columns(*attempt.outcome())
        .join_from(failures, attempt.spent, true())
        .join(attempt.fresh, true())
        .add_cte(attempt.forget)
    )


_INSERT_POSTING: dict[tuple[bool, bool, int], HotStatement] = {}


def _insert_posting(counting: bool, spending: bool, transitions: int) -> HotStatement:
    """_posting_insert's statement of that shape, built on its first use (a few shapes)."""
    shape = (counting, spending, _transitions_shape(transitions))
    statement = _INSERT_POSTING.get(shape)
    if statement is None:
        statement = _INSERT_POSTING[shape] = HotStatement(_posting_insert(*shape))
    return statement


# --------------------------------------------------------------------------- conversions

# The enums of the rows are StrEnums: str(member) is its value as a plain str, and a column's
# value is turned back into its member by a lookup here. `member.value` (a property) and
# `Enum(value)` each cost two or three Python calls, and a posting converts about 30 of them
# (issue 13).
_JOB_STATUS = {m.value: m for m in JobStatus}
_PAYMENT_STATUS = {m.value: m for m in PaymentStatus}
_SAGA_STATE = {m.value: m for m in SagaState}
_PAYMENT_METHOD = {m.value: m for m in PaymentMethod}
_SAGA_KIND = {m.value: m for m in SagaKind}


def job_from_row(row: Row | SimpleNamespace) -> Job:
    """Domain job from its row."""
    return Job(
        id=row.id,
        company_id=row.company_id,
        fields=JobFields(
            title=row.title,
            description=row.description,
            location=row.location,
            employment_type=row.employment_type,
            category=row.category,
            salary_min_minor=row.salary_min_minor,
            salary_max_minor=row.salary_max_minor,
            salary_currency=row.salary_currency,
        ),
        status=_JOB_STATUS[row.status],
        created_at=row.created_at,
        updated_at=row.updated_at,
        payment_id=row.payment_id,
        payment_status=_PAYMENT_STATUS[row.payment_status] if row.payment_status else None,
        payment_amount_minor=row.payment_amount_minor,
        payment_currency=row.payment_currency,
        payment_method=row.payment_method,
        posted_at=row.posted_at,
        expires_at=row.expires_at,
        terms_version=row.terms_version,
        failure_reason=row.failure_reason,
        saga_id=row.saga_id,
        create_request_id=row.create_request_id,
    )


def job_to_values(job: Job) -> dict[str, object]:
    """Column values of a domain job."""
    return {
        "id": job.id,
        "company_id": job.company_id,
        **job.fields.values(),
        "status": str(job.status),
        "payment_id": job.payment_id,
        "payment_status": str(job.payment_status) if job.payment_status else None,
        "payment_amount_minor": job.payment_amount_minor,
        "payment_currency": job.payment_currency,
        "payment_method": job.payment_method,
        "posted_at": job.posted_at,
        "expires_at": job.expires_at,
        "terms_version": job.terms_version,
        "failure_reason": job.failure_reason,
        "saga_id": job.saga_id,
        "create_request_id": job.create_request_id,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def transition_to_values(t: Transition) -> dict[str, object]:
    return {
        "job_id": t.job_id,
        "from_status": str(t.from_status) if t.from_status else None,
        "to_status": str(t.to_status),
        "actor": t.actor,
        "reason": t.reason,
        "at": t.at,
    }


def transition_from_row(row: Row) -> Transition:
    return Transition(
        job_id=row.job_id,
        from_status=JobStatus(row.from_status) if row.from_status else None,
        to_status=JobStatus(row.to_status),
        actor=row.actor,
        reason=row.reason,
        at=row.at,
    )


def saga_from_row(row: Row | SimpleNamespace) -> Saga:
    """Domain saga from its row."""
    return Saga(
        id=row.id,
        company_id=row.company_id,
        request_id=row.request_id,
        fingerprint=row.fingerprint,
        actor=row.actor,
        state=_SAGA_STATE[row.state],
        method=_PAYMENT_METHOD[row.method],
        created_at=row.created_at,
        updated_at=row.updated_at,
        deadline_at=row.deadline_at,
        job_id=row.job_id,
        amount_minor=row.amount_minor,
        currency=row.currency,
        terms_version=row.terms_version,
        payment_token=row.payment_token,
        return_url=row.return_url,
        cancel_url=row.cancel_url,
        email=row.email,
        payment_id=row.payment_id,
        provider_state=row.provider_state,
        next_action_url=row.next_action_url,
        activated=row.activated,
        captured=row.captured,
        refund_amount_minor=row.refund_amount_minor,
        refund_reason=row.refund_reason,
        failure=SagaError.from_dict(row.failure) if row.failure else None,
        response=row.response,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
        finished_at=row.finished_at,
        kind=_SAGA_KIND[row.kind],
    )


def saga_to_values(saga: Saga) -> dict[str, object]:
    """Column values of a domain saga."""
    return {
        "id": saga.id,
        "company_id": saga.company_id,
        "request_id": saga.request_id,
        "fingerprint": saga.fingerprint,
        "actor": saga.actor,
        "state": str(saga.state),
        "method": str(saga.method),
        "job_id": saga.job_id,
        "amount_minor": saga.amount_minor,
        "currency": saga.currency,
        "terms_version": saga.terms_version,
        "payment_token": saga.payment_token,
        "return_url": saga.return_url,
        "cancel_url": saga.cancel_url,
        "email": saga.email,
        "payment_id": saga.payment_id,
        "provider_state": saga.provider_state,
        "next_action_url": saga.next_action_url,
        "activated": saga.activated,
        "captured": saga.captured,
        "refund_amount_minor": saga.refund_amount_minor,
        "refund_reason": saga.refund_reason,
        "failure": saga.failure.to_dict() if saga.failure else None,
        "response": saga.response,
        "attempts": saga.attempts,
        "next_attempt_at": saga.next_attempt_at,
        "lease_owner": saga.lease_owner,
        "lease_until": saga.lease_until,
        "deadline_at": saga.deadline_at,
        "created_at": saga.created_at,
        "updated_at": saga.updated_at,
        "finished_at": saga.finished_at,
        "kind": str(saga.kind),
    }


# --------------------------------------------------------------------------- repositories


class SqlJobRepository:
    """Jobs and their append-only transitions (written with the unit of work's batch)."""

    def __init__(self, session: BatchedSession) -> None:
        self.session = session
        self.writes = session.batch

    def _read(self, row: Row) -> Job:
        self.writes.seen(jobs, dict(row._mapping))
        return job_from_row(row)

    async def _append(self, job: Job) -> None:
        transitions = job.drain_transitions()
        await self.writes.insert(job_transitions, [transition_to_values(t) for t in transitions])

    async def add(self, job: Job) -> None:
        values = job_to_values(job)
        await self.writes.insert(jobs, [values])
        self.writes.seen(jobs, values)
        await self._append(job)

    async def add_if_absent(self, job: Job) -> bool:
        stmt = (
            pg_insert(jobs)
            .values(**job_to_values(job))
            .on_conflict_do_nothing(
                index_elements=["company_id", "create_request_id"],
                index_where=text("create_request_id <> ''"),
            )
            .returning(jobs.c.id)
        )
        if (await self.session.execute(stmt)).scalar_one_or_none() is None:
            return False
        self.writes.seen(jobs, job_to_values(job))
        await self._append(job)
        return True

    async def get_by_create_request(self, company_id: str, request_id: str) -> Job | None:
        stmt = select(jobs).where(
            jobs.c.company_id == company_id, jobs.c.create_request_id == request_id
        )
        row = (await self.session.execute(stmt)).one_or_none()
        return self._read(row) if row else None

    async def get(self, job_id: str, *, for_update: bool = False) -> Job | None:
        stmt = _LOCK_JOB if for_update else _GET_JOB
        row = (await self.session.execute(stmt, {_KEY: job_id})).one_or_none()
        return self._read(row) if row else None

    async def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        return await _by_ids(self.session, (_GET_JOBS, _GET_JOBS_ARRAY), job_ids, self._read)

    async def save(self, job: Job) -> None:
        await self.writes.update(jobs, job_to_values(job))
        await self._append(job)

    async def list_active(
        self, category: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Job]:
        stmt = select(jobs).where(jobs.c.status == JobStatus.ACTIVE.value)
        if category:
            stmt = stmt.where(jobs.c.category == category)
        if after is not None:
            stmt = stmt.where(tuple_(jobs.c.posted_at, jobs.c.id) < tuple_(*after))
        stmt = stmt.order_by(jobs.c.posted_at.desc(), jobs.c.id.desc()).limit(limit)
        return [self._read(r) for r in (await self.session.execute(stmt)).all()]

    async def list_by_company(
        self, company_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Job]:
        stmt = select(jobs).where(jobs.c.company_id == company_id)
        if after is not None:
            stmt = stmt.where(tuple_(jobs.c.created_at, jobs.c.id) < tuple_(*after))
        stmt = stmt.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
        return [self._read(r) for r in (await self.session.execute(stmt)).all()]

    async def transitions(self, job_id: str) -> list[Transition]:
        stmt = (
            select(job_transitions)
            .where(job_transitions.c.job_id == job_id)
            .order_by(job_transitions.c.id)
        )
        return [transition_from_row(r) for r in (await self.session.execute(stmt)).all()]

    async def lock_expired(self, now: datetime, limit: int) -> list[Job]:
        stmt = (
            select(jobs)
            .where(jobs.c.status == JobStatus.ACTIVE.value, jobs.c.expires_at <= now)
            .order_by(jobs.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [self._read(r) for r in (await self.session.execute(stmt)).all()]


class SqlSagaRepository:
    """Saga rows (insert-first on the caller's idempotency key) and the saga log (written with
    the unit of work's batch)."""

    def __init__(self, session: BatchedSession) -> None:
        self.session = session
        self.writes = session.batch
        # Each saga and job read or written with lock_with_job or insert_posting, as the batch
        # keeps them (current with every write): what `stored` gives once they are committed.
        self._rows: dict[str, _Stored] = {}
        # The guard's parameters when the unit of work assumed its rows (see lock_with_job).
        self.assumed: dict[str, Any] | None = None
        # Whether the unit of work committed its writes (set by its commit).
        self.committed = False

    def _read(self, row: Row) -> Saga:
        self.writes.seen(sagas, dict(row._mapping))
        return saga_from_row(row)

    def stored(self, saga_id: str) -> object | None:
        """The saga and its job as this unit of work read or wrote them (lock_with_job,
        insert_posting), for a later unit of work to assume (valid once this one committed,
        or if it wrote nothing); None when they were not read together."""
        rows = self._rows.get(saga_id)
        if rows is None:
            return None
        # Each row's version after this unit of work: as it was if the row was not updated; one
        # more if it was, by this unit of work's commit, with the row locked from the read (or
        # the assumption) on, so no one else's update came between (one UPDATE a row: the batch
        # merges a row's changes; were there two, the version guessed is below the row's and
        # never matches, and the next step reads the rows under lock, as for any changed row);
        # unknown (None) if it was updated but not committed. (Worked out here, not by a method
        # per row: two Python calls per step fewer, issue 13.)
        committed = self.committed
        saga_version, job_version = rows.saga_version, rows.job_version
        if saga_version is not None and rows.saga != rows.saga_was:
            saga_version = saga_version + 1 if committed else None
        if job_version is not None and rows.job != rows.job_was:
            job_version = job_version + 1 if committed else None
        return _Stored(dict(rows.saga), dict(rows.job), saga_version, job_version)

    async def insert(self, saga: Saga) -> bool:
        values = saga_to_values(saga)
        if (await self.session.execute(_INSERT_SAGA, values)).scalar_one_or_none() is None:
            return False
        self.writes.seen(sagas, values)
        return True

    async def insert_counting_failures(
        self, saga: Saga, since: datetime, reasons: frozenset[str]
    ) -> int | None:
        values = saga_to_values(saga)
        params = {
            **values,
            "failures_company_id": saga.company_id,
            "failures_since": since,
            "failures_reasons": _joined_reasons(reasons),
        }
        failures = (
            await self.session.execute(_INSERT_SAGA_COUNTING_FAILURES, params)
        ).scalar_one_or_none()
        if failures is None:
            return None
        self.writes.seen(sagas, values)
        return int(failures)

    async def insert_posting(
        self,
        saga: Saga,
        job: Job,
        detail: str,
        *,
        failures_since: datetime | None = None,
        reasons: frozenset[str] = frozenset(),
        max_failures: int = 0,
        attempt: PostingAttempt | None = None,
    ) -> tuple[bool, int]:
        """Insert a posting's saga first on its key and, with it, its new job (with the job's
        pending transitions) and the saga's first log line `detail`, as a transaction of its own
        in one round trip: (inserted, the company's recent failed payments). `failures_since`:
        count those (PAY-14) and insert nothing unless they are below `max_failures`. Nothing
        is inserted when the key is taken. `attempt`: spent first by the same statement, its
        outcome recorded on it (allowed None: the user has no bucket yet, nothing was spent or
        inserted); nothing is inserted unless its bucket had a token. Durable when this returns."""
        counting = failures_since is not None
        saga_values = saga_to_values(saga)
        job_values = job_to_values(job)
        params: dict[str, Any] = {f"s_{k}": v for k, v in saga_values.items()}
        params.update({f"j_{k}": v for k, v in job_values.items()})
        _transition_params(job.pending, params)
        params.update(
            {"l_step": "pending_payment", "l_detail": detail[:2000], "l_at": saga.created_at}
        )
        if counting:
            params.update(
                failures_company_id=saga.company_id,
                failures_since=failures_since,
                failures_reasons=_joined_reasons(reasons),
                max_failures=max_failures,
            )
        if attempt is not None:
            params.update(_attempt_params(attempt))
        await self.writes.flush()  # nothing waits here: the statement is a transaction alone
        statement = _insert_posting(counting, attempt is not None, len(job.pending))
        row = (await execute_alone(self.session.session, statement, params)).one_or_none()
        if row is None:  # the user's first attempt: no bucket, nothing spent or inserted
            return False, 0
        if attempt is not None:
            await _decided(self.session, attempt, row)
        if row.inserted:
            job.drain_transitions()
            self.writes.seen(sagas, saga_values)
            self.writes.seen(jobs, job_values)
            self._rows[saga.id] = _Stored(saga_values, job_values, 0, 0)  # as inserted
        return bool(row.inserted), int(row.n)

    async def get(self, saga_id: str, *, for_update: bool = False) -> Saga | None:
        stmt = _LOCK_SAGA if for_update else _GET_SAGA
        row = (await self.session.execute(stmt, {_KEY: saga_id})).one_or_none()
        return self._read(row) if row else None

    async def lock_with_job(
        self, saga_id: str, *, lock_job: bool = True, assumed: object | None = None
    ) -> tuple[Saga | None, Job | None]:
        """The saga, locked, and its job (locked too unless `lock_job` is False), in one round
        trip; a saga without its job (none yet, or gone) is read alone.

        `assumed` (what `stored` gave after an earlier unit of work on them): the saga and job
        as stored then, with no round trip; the unit of work's commit then writes in one
        statement alone, only if both rows, locked by it, still hold those values, else it
        writes nothing and raises StaleRow (issue 13: the locked path's BEGIN, read and COMMIT
        round trips saved; the decision is the same as if they had been read locked)."""
        if isinstance(assumed, _Stored) and lock_job and assumed.saga["id"] == saga_id:
            saga_values, job_values = dict(assumed.saga), dict(assumed.job)
            saga_version, job_version = assumed.saga_version, assumed.job_version
            self.assumed = {
                "g_s_id": saga_id,
                "g_s_version": saga_version,
                "g_j_id": job_values["id"],
                "g_j_version": job_version,
            }
        else:
            stmt = _LOCK_SAGA_AND_JOB if lock_job else _LOCK_SAGA_READ_JOB
            row = (await self.session.execute(stmt, {_KEY: saga_id})).one_or_none()
            if row is None:
                return await self.get(saga_id, for_update=True), None
            saga_values, job_values = _split(row)
            # The job's version is known only if it is locked too.
            saga_version, job_version = saga_values["version"], job_values["version"]
            if not lock_job:
                job_version = None
        self.writes.seen(sagas, saga_values)
        self.writes.seen(jobs, job_values)
        self._rows[saga_id] = _Stored(saga_values, job_values, saga_version, job_version)
        return saga_from_row(SimpleNamespace(**saga_values)), job_from_row(
            SimpleNamespace(**job_values)
        )

    async def commit_assumed(self) -> None:
        """The commit of a unit of work that assumed its saga and job (lock_with_job): its
        writes in one statement that commits by itself, if the rows still are as assumed."""
        assert self.assumed is not None
        if not await self.writes.flush_if(_STILL_STORED, self.assumed, execute_alone):
            raise StaleRow("the saga or its job changed since this process stored them")
        self.committed = True

    async def get_many(self, saga_ids: Sequence[str]) -> dict[str, Saga]:
        return await _by_ids(self.session, (_GET_SAGAS, _GET_SAGAS_ARRAY), saga_ids, self._read)

    async def get_by_key(self, company_id: str, request_id: str) -> Saga | None:
        stmt = select(sagas).where(
            sagas.c.company_id == company_id, sagas.c.request_id == request_id
        )
        row = (await self.session.execute(stmt)).one_or_none()
        return self._read(row) if row else None

    async def save(self, saga: Saga) -> None:
        await self.writes.update(sagas, saga_to_values(saga))

    async def log(self, saga_id: str, step: str, detail: str, at: datetime) -> None:
        await self.writes.insert(
            saga_log, [{"saga_id": saga_id, "step": step, "detail": detail[:2000], "at": at}]
        )

    async def claim_due(
        self, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[Saga]:
        params = {"now": now, "limit": limit}
        ids = list((await self.session.execute(_DUE_SAGAS, params)).scalars())
        if not ids:
            return []
        stmt = (
            update(sagas)
            .where(sagas.c.id.in_(ids))
            .values(lease_owner=owner, lease_until=lease_until)
            .returning(*sagas.c)
        )
        rows = (await self.session.execute(stmt)).all()
        return [self._read(r) for r in rows]

    async def count_stuck(self, now: datetime) -> int:
        return int((await self.session.execute(_COUNT_STUCK, {"now": now})).scalar_one())


class SqlSettlementRepository:
    """The settlement stream cursor of each consumer."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def cursor(self, consumer: str) -> int:
        stmt = select(settlement_cursors.c.cursor).where(settlement_cursors.c.consumer == consumer)
        return int((await self.session.execute(stmt)).scalar_one_or_none() or 0)

    async def advance(self, consumer: str, cursor: int) -> None:
        """Move the cursor forward (never back), in a unit of work of its own: the one statement
        commits by itself (no BEGIN and COMMIT round trips)."""
        params = {"consumer": consumer, "cursor": cursor}
        await execute_alone(self.session, _HOT_ADVANCE_CURSOR, params)


class SqlPostingRateRepository:
    """The posting rate limit's buckets (one row per user, locked while one attempt is decided)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def take(
        self,
        user_id: str,
        attempt_id: str,
        *,
        limit: int,
        window_seconds: int,
        now: datetime,
        forget_before: datetime,
    ) -> tuple[float, bool]:
        """Spend a token of the user's bucket for the attempt, unless it was charged before:
        (tokens left, allowed). Each statement commits by itself; the attempt is decided in one."""
        attempt = PostingAttempt(user_id, attempt_id, limit, window_seconds, now, forget_before)
        # Outside any transaction, no BEGIN and COMMIT round trips; on the pooled connection
        # without SQLAlchemy's Connection while the statements are hot (db.autocommit).
        await autocommit(self.session)
        session = self.session
        params = _attempt_params(attempt)
        while (row := (await session.execute(_TAKE_ATTEMPT, params)).one_or_none()) is None:
            # The user's first attempt: the bucket is created full (a concurrent creator wins
            # harmlessly), then the attempt is decided on it.
            await session.execute(
                pg_insert(posting_rate_buckets)
                .values(user_id=user_id, tokens=float(limit), updated_at=now)
                .on_conflict_do_nothing(index_elements=["user_id"])
            )
        await _decided(session, attempt, row)
        assert attempt.tokens is not None and attempt.allowed is not None
        return attempt.tokens, attempt.allowed


async def _decided(
    executor: AsyncConnection | BatchedSession, attempt: PostingAttempt, row: Row
) -> None:
    """Record on `attempt` what its statement's row (tokens, had_token, charged) decided."""
    attempt.tokens = float(row.tokens)
    if row.had_token:
        # Spent, or a repeat found by the attempt's insert (nothing spent, allowed).
        attempt.allowed = True
        return
    # No token: allowed only as a repeat. A fresh read, after the bucket's lock was taken and
    # released, sees a charge by a concurrent twin that the statement's snapshot missed.
    attempt.allowed = bool(attempt.attempt_id) and await _was_charged(
        executor, attempt.user_id, attempt.attempt_id
    )


async def _was_charged(
    executor: AsyncConnection | BatchedSession, user_id: str, attempt_id: str
) -> bool:
    stmt = select(posting_rate_attempts.c.attempt_id).where(
        posting_rate_attempts.c.user_id == user_id,
        posting_rate_attempts.c.attempt_id == attempt_id,
    )
    return (await executor.execute(stmt)).first() is not None
