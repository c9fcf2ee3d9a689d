"""The settlement stream in the order of its writers' transaction ids (issue 13): an outbox event
is written once, with no UPDATE to publish it.

Since 0006 a writer inserted its row with `position` NULL and `outbox_publish()` gave positions
later, in a statement of its own (an UPDATE of every row, into four indexes, and a commit per
poll: ~12 WAL records per posting). Now a row carries its writer's transaction id
(`writer_xid`, `pg_current_xact_id()` by default, an xid8: 64 bits, no wraparound), and the stream
is the rows in (`writer_xid`, `cursor`) order whose writer is below the reading snapshot's xmin
(`pg_snapshot_xmin(pg_current_snapshot())`). Every transaction below that xmin has committed or
aborted, so its rows are all visible to that snapshot or never will be, and no transaction can
write a row below it later (a new transaction id is above every running one): what a reader is
given is always a prefix of the stream, and a reader resuming after the last event it was given
misses nothing. Events committed above the horizon wait until every older writer has ended (see
docs/performance.md, "Still to find": what holds the horizon back).

The cursor stays one int64 in the protocol and keeps its order: an event's cursor is
`writer_xid << 16 | k`, k its index among its transaction's events (computed when read: the
transaction has ended, so its events are fixed), at most 65,535 (a read raises past it). Rows
written before this revision keep the positions they were given (published here first); their
cursor is that position, all below `outbox_stream_legacy_last()`, which is below every new
cursor (checked here): a consumer's stored position resumes among them and continues into the
new rows without loss or replay. `ix_outbox_position` and `ix_outbox_subsystem_position` hold
those old rows only (their predicate), the two new indexes the new rows only.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02 01:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A cursor's low bits: the event's index among its transaction's events.
INDEX_BITS = 16

_COLUMNS = (
    "o.cursor, o.event_id, o.type, o.subsystem, o.payment_id, o.transaction_id, o.snapshot,"
    " o.occurred_at"
)

# The cursor of a new row: its writer and its index among the writer's events (an index probe of
# ix_outbox_stream; nearly always 0: a transaction writes one event).
_NEW_CURSOR = """outbox_stream_cursor(o.writer_xid, (
                SELECT count(*) FROM outbox p
                WHERE p.position IS NULL AND p.writer_xid = o.writer_xid
                    AND p.cursor < o.cursor))"""

# Below the snapshot's xmin every writer has ended: nothing can appear there later.
_HORIZON = "o.writer_xid < pg_snapshot_xmin(pg_current_snapshot())"

_READ = f"""
CREATE FUNCTION outbox_after(after bigint, n integer, only_subsystem text)
RETURNS TABLE (cursor bigint, event_id varchar, type varchar, subsystem varchar,
               payment_id varchar, transaction_id varchar, snapshot jsonb,
               occurred_at timestamptz, "position" bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    legacy_last CONSTANT bigint := outbox_stream_legacy_last();
    from_xid xid8 := '0';
    from_cursor bigint := 0;
    got integer;
BEGIN
    IF after < legacy_last THEN
        -- Rows published before 0020, by their positions; then the new rows from the first.
        IF only_subsystem = '' THEN
            RETURN QUERY
                SELECT {_COLUMNS}, o.position FROM outbox o
                WHERE o.position > after ORDER BY o.position LIMIT n;
        ELSE
            RETURN QUERY
                SELECT {_COLUMNS}, o.position FROM outbox o
                WHERE o.subsystem = only_subsystem AND o.position > after
                ORDER BY o.subsystem, o.position LIMIT n;
        END IF;
        GET DIAGNOSTICS got = ROW_COUNT;
        n := n - got;
        IF n <= 0 THEN
            RETURN;
        END IF;
    ELSIF after > legacy_last THEN
        -- After event k of transaction x: from that event's row (after all of x's events when it
        -- has fewer).
        from_xid := (after >> {INDEX_BITS})::text::xid8;
        SELECT o.cursor INTO from_cursor FROM outbox o
        WHERE o.position IS NULL AND o.writer_xid = from_xid
        ORDER BY o.writer_xid, o.cursor OFFSET (after & {(1 << INDEX_BITS) - 1}) LIMIT 1;
        IF NOT FOUND THEN
            from_cursor := 9223372036854775807;
        END IF;
    END IF;
    IF only_subsystem = '' THEN
        RETURN QUERY
            SELECT {_COLUMNS}, {_NEW_CURSOR}
            FROM outbox o
            WHERE o.position IS NULL AND (o.writer_xid, o.cursor) > (from_xid, from_cursor)
                AND {_HORIZON}
            ORDER BY o.writer_xid, o.cursor LIMIT n;
    ELSE
        RETURN QUERY
            SELECT {_COLUMNS}, {_NEW_CURSOR}
            FROM outbox o
            WHERE o.position IS NULL AND o.subsystem = only_subsystem
                AND (o.writer_xid, o.cursor) > (from_xid, from_cursor) AND {_HORIZON}
            ORDER BY o.subsystem, o.writer_xid, o.cursor LIMIT n;
    END IF;
END
$$
"""

_CURSOR_OF = f"""
CREATE FUNCTION outbox_stream_cursor(writer xid8, k bigint) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF k >= {1 << INDEX_BITS} THEN
        RAISE EXCEPTION 'transaction % wrote more than {1 << INDEX_BITS} outbox events', writer;
    END IF;
    RETURN (writer::text::bigint << {INDEX_BITS}) | k;
END
$$
"""

# Migration 0006's publishing and 0011's read with 0014's setting, for the downgrade.
_OLD_PUBLISH = """
CREATE FUNCTION outbox_publish() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    published bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7310001);
    UPDATE outbox o SET position = n.position
    FROM (
        SELECT u.cursor, nextval('outbox_position_seq') AS position
        FROM (SELECT cursor FROM outbox WHERE position IS NULL ORDER BY cursor) u
    ) n
    WHERE o.cursor = n.cursor;
    GET DIAGNOSTICS published = ROW_COUNT;
    RETURN published;
END
$$
"""
_OLD_READ = """
CREATE FUNCTION outbox_after(after bigint, n integer, only_subsystem text)
RETURNS SETOF outbox LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM outbox_publish();
    IF only_subsystem = '' THEN
        RETURN QUERY
            SELECT * FROM outbox WHERE position > after ORDER BY position LIMIT n;
    ELSE
        RETURN QUERY
            SELECT * FROM outbox
            WHERE subsystem = only_subsystem AND position > after
            ORDER BY subsystem, position
            LIMIT n;
    END IF;
END
$$
"""


def upgrade() -> None:
    # Writers in flight finish first (they hold the table's row-exclusive lock); later ones wait.
    op.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
    # Every committed row gets its position the old way: they are the stream's old part.
    op.execute("SELECT outbox_publish()")
    # No default for the rows there (no rewrite): theirs is NULL; every later row's is its writer.
    op.execute("ALTER TABLE outbox ADD COLUMN writer_xid xid8")
    op.execute("ALTER TABLE outbox ALTER COLUMN writer_xid SET DEFAULT pg_current_xact_id()")
    # The old part's end, kept as a function's constant; below every cursor of a new row (every
    # new writer's id is at least this snapshot's xmin).
    op.execute(
        f"""
        DO $$
        DECLARE
            last bigint := (SELECT coalesce(max(position), 0) FROM outbox);
            first_new bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                << {INDEX_BITS};
        BEGIN
            IF last >= first_new THEN
                RAISE EXCEPTION 'outbox position % is not below the first new cursor %',
                    last, first_new;
            END IF;
            EXECUTE format(
                'CREATE FUNCTION outbox_stream_legacy_last() RETURNS bigint'
                ' LANGUAGE sql IMMUTABLE AS %L', 'SELECT ' || last || '::bigint');
        END
        $$
        """
    )
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.create_index(
        "ix_outbox_stream",
        "outbox",
        ["writer_xid", "cursor"],
        postgresql_where=sa.text("position IS NULL"),
    )
    op.create_index(
        "ix_outbox_subsystem_stream",
        "outbox",
        ["subsystem", "writer_xid", "cursor"],
        postgresql_where=sa.text("position IS NULL"),
    )
    op.execute("DROP FUNCTION outbox_after(bigint, integer, text)")
    op.execute("DROP FUNCTION outbox_publish()")
    op.execute("DROP SEQUENCE outbox_position_seq")
    op.execute(_CURSOR_OF)
    op.execute(_READ)


def downgrade() -> None:
    op.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
    # The new rows' positions are the cursors consumers were given: they resume where they were.
    op.execute(
        f"""
        UPDATE outbox o SET position = {_NEW_CURSOR}
        WHERE o.position IS NULL
        """
    )
    op.execute("DROP FUNCTION outbox_after(bigint, integer, text)")
    op.execute("DROP FUNCTION outbox_stream_cursor(xid8, bigint)")
    op.execute("DROP FUNCTION outbox_stream_legacy_last()")
    op.drop_index("ix_outbox_subsystem_stream", table_name="outbox")
    op.drop_index("ix_outbox_stream", table_name="outbox")
    op.drop_column("outbox", "writer_xid")
    op.execute("CREATE SEQUENCE outbox_position_seq AS bigint")
    op.execute(
        "SELECT setval('outbox_position_seq', (SELECT coalesce(max(position), 0) + 1 FROM outbox),"
        " false)"
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["cursor"],
        postgresql_where=sa.text("position IS NULL"),
    )
    op.execute(_OLD_PUBLISH)
    op.execute(_OLD_READ)
