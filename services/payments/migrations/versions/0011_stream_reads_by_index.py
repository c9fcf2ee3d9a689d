"""The settlement stream's read goes through an index whatever the outbox's statistics (issue 13).

`outbox_after()` (migration 0006) read `WHERE position > after AND (only_subsystem = '' OR
subsystem = only_subsystem) ORDER BY position LIMIT n`. Inside the plpgsql function that query is
planned with the consumer's values; on an outbox without statistics (every fresh database, until
autovacuum analyzes it) PostgreSQL guessed the subsystem filter keeps almost nothing and chose a
sequential scan of every event ever published and a sort, on every poll of the jobs consumer
(auto_explain on the pay-to-post bench: 50 to 370 pages read per poll, growing with the outbox).
Now a consumer of one subsystem reads `ix_outbox_subsystem_position` (its events in stream
order: both conditions are the index's, so no plan can do better by scanning), and a consumer of
every subsystem reads `ix_outbox_position` by its one condition, as before. Same rows, same order.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 10:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_READ = """
CREATE OR REPLACE FUNCTION outbox_after(after bigint, n integer, only_subsystem text)
RETURNS SETOF outbox LANGUAGE plpgsql AS $$
BEGIN
    PERFORM outbox_publish();
    {read}
END
$$
"""

# Two queries, each with the conditions of its own index (one query with an OR of both read
# neither index once planned without statistics).
_BY_INDEX = """IF only_subsystem = '' THEN
        RETURN QUERY
            SELECT * FROM outbox WHERE position > after ORDER BY position LIMIT n;
    ELSE
        RETURN QUERY
            SELECT * FROM outbox
            WHERE subsystem = only_subsystem AND position > after
            ORDER BY subsystem, position
            LIMIT n;
    END IF;"""

# Migration 0006's read.
_BY_FILTER = """RETURN QUERY
        SELECT * FROM outbox
        WHERE position > after AND (only_subsystem = '' OR subsystem = only_subsystem)
        ORDER BY position
        LIMIT n;"""


def upgrade() -> None:
    op.create_index(
        "ix_outbox_subsystem_position",
        "outbox",
        ["subsystem", "position"],
        postgresql_where=sa.text("position IS NOT NULL"),
    )
    op.execute(_READ.format(read=_BY_INDEX))


def downgrade() -> None:
    op.execute(_READ.format(read=_BY_FILTER))
    op.drop_index("ix_outbox_subsystem_position", table_name="outbox")
