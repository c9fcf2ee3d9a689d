"""The settlement outbox without a lock held by writers (issue 13): stream positions are given
after commit, by one publisher at a time, so they become visible in order.

Until now every writer took one advisory lock before its outbox INSERT and held it until its
commit, so that cursors became visible in order: a reader resuming "after cursor N" could never
skip an event committed late with a smaller cursor. It serialised every publishing transaction of
the service. Now a writer only inserts its row (`position` NULL: not published yet). The stream's
cursor is `position`, given by `outbox_publish()`: in one short statement of its own it takes the
publishing lock, then (on a snapshot taken after the lock, so it sees every earlier publisher's
commit) numbers the committed unpublished rows in `cursor` order. Publishers follow each other, so
every position a reader sees belongs to a publisher that committed before any greater one began:
what is visible is always a prefix. Readers publish before reading, in the same statement
(`outbox_after()`), so a crashed writer's rows are published by the next read. `cursor` stays the row's key (the callback relay's).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same key the writers' lock used: only publishers take it now, one short statement each.
PUBLISH_LOCK_KEY = 7_310_001


def upgrade() -> None:
    op.add_column("outbox", sa.Column("position", sa.BigInteger(), nullable=True))
    # Rows written before this revision were published by the old lock: their cursor is their
    # position (a consumer resuming from a stored cursor continues where it was).
    op.execute("UPDATE outbox SET position = cursor")
    op.create_index(
        "ix_outbox_position",
        "outbox",
        ["position"],
        unique=True,
        postgresql_where=sa.text("position IS NOT NULL"),
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["cursor"],
        postgresql_where=sa.text("position IS NULL"),
    )
    op.execute("CREATE SEQUENCE outbox_position_seq AS bigint")
    op.execute(
        "SELECT setval('outbox_position_seq', (SELECT coalesce(max(cursor), 0) + 1 FROM outbox),"
        " false)"
    )
    op.execute(
        f"""
        CREATE FUNCTION outbox_publish() RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            published bigint;
        BEGIN
            PERFORM pg_advisory_xact_lock({PUBLISH_LOCK_KEY});
            -- A statement of a volatile function: a fresh snapshot, taken after the lock.
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
    )
    # A reader's one statement: publish, then read on a fresh snapshot that sees it.
    op.execute(
        """
        CREATE FUNCTION outbox_after(after bigint, n integer, only_subsystem text)
        RETURNS SETOF outbox LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM outbox_publish();
            RETURN QUERY
                SELECT * FROM outbox
                WHERE position > after AND (only_subsystem = '' OR subsystem = only_subsystem)
                ORDER BY position
                LIMIT n;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION outbox_after(bigint, integer, text)")
    op.execute("DROP FUNCTION outbox_publish()")
    op.execute("DROP SEQUENCE outbox_position_seq")
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.drop_index("ix_outbox_position", table_name="outbox")
    op.drop_column("outbox", "position")
