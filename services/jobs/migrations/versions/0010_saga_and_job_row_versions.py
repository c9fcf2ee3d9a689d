"""A row version on sagas and jobs, moved by PostgreSQL on every UPDATE (issue 13).

A posting's Try and Confirm steps are written on the saga and job as the request stored them,
by one statement that writes only if both rows, locked, are still as stored. That check compared
every column of both rows (59 parameters, each encoded, sent and compared, per step); it now
compares each row's `version`, which a BEFORE UPDATE trigger moves on every update, whoever
makes it: a row whose version is as stored has not been updated since, so the check means what
it meant (stricter only for an update that wrote the same values back, which is taken again on
the rows read under lock, as any changed row is). No row is deleted or re-keyed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 07:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP_FUNCTION = """
CREATE OR REPLACE FUNCTION hirepay_bump_version() RETURNS trigger AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.execute(BUMP_FUNCTION)
    for table in ("sagas", "jobs"):
        op.add_column(
            table, sa.Column("version", sa.BigInteger(), nullable=False, server_default="0")
        )
        op.execute(
            f"CREATE TRIGGER {table}_version BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION hirepay_bump_version()"
        )


def downgrade() -> None:
    for table in ("sagas", "jobs"):
        op.execute(f"DROP TRIGGER {table}_version ON {table}")
        op.drop_column(table, "version")
    op.execute("DROP FUNCTION hirepay_bump_version()")
