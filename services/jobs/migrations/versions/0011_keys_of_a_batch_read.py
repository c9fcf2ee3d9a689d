"""`hirepay_keys(ids)`: the ids of a by-ids read as rows, with a fixed row estimate (issue 13).

Sagas and jobs by ids (the settlement consumer's batch, the auditor's pages) probe each id's
primary key from `unnest(:ids)`. PostgreSQL knows the length of an array it is given, so every
custom plan looked cheaper than the generic one (which assumes 10 ids) and the statement was
planned again on every call (pg_stat_statements on the pay-to-post bench at c=32: 483 plans for
496 calls, 0.22 ms each). This function returns the same rows but is never inlined (its SET
clause), so generic and custom plans both estimate ROWS 4 ids: after its first custom plans a
connection keeps the generic one, an index probe per id.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 10:35:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION hirepay_keys(ids varchar[]) RETURNS SETOF varchar
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE ROWS 4
        SET search_path = pg_catalog
        AS $$ SELECT unnest(ids) $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION hirepay_keys(varchar[])")
