"""The settlement stream's read keeps one plan per connection (issue 13): `outbox_after()` runs
with `plan_cache_mode = force_generic_plan`.

Its read (`position > after ... ORDER BY position LIMIT n`, migration 0011) is a plpgsql query
with parameters; PostgreSQL planned it afresh on every poll, because a custom plan, knowing that
`after` is near the newest position, always looks cheaper than the generic one. Planning was most
of the poll's cost: on the pay-to-post bench at c=32 (run on a PostgreSQL 15 with
pg_stat_statements, which the embedded server lacks) 0.12 of the 0.15 polls per posting planned
it, and measured alone on the embedded PostgreSQL 16 (20,000 published events, 14 new per poll) a
poll took 245 us of its backend's CPU with a plan each time, 140 us with the one generic plan. Both
reads have one plan only worth having, the index that holds their condition in stream order
(`ix_outbox_subsystem_position` for one subsystem, `ix_outbox_position` for all), with or
without statistics: tests/payments/integration/test_settlement_stream_reads_pg.py pins it on a
fresh database, every poll a generic plan. `outbox_publish()` (called inside) has no parameters:
its plan was generic already. Same rows, same order, same publishing.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 16:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = "outbox_after(bigint, integer, text)"


def upgrade() -> None:
    op.execute(f"ALTER FUNCTION {_FUNCTION} SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {_FUNCTION} RESET plan_cache_mode")
