"""The forgetting of a user's expired posting attempts goes through its index whatever the
statistics saw first (PAY-14, issue 13).

Each charged attempt deletes its user's attempts charged before the horizon (a day) through
`ix_posting_rate_attempts_charged` (0007). The statement's generic plan, which a pooled
connection keeps from its sixth run on, estimates `user_id = $1` as one user's share of the
table: on a database whose first ANALYZE saw the attempts of one user (a new deployment, the
benchmark's fresh database after its one-worker case) that share was the whole table, so the
plan scanned every attempt of every user on each posting until the statistics and the
connection's plan were renewed (in the benchmark at c=32: 0.5 sequential scans and 680 rows
read per posting, growing with the day's postings). A user holds a few of the day's attempts
(a rate-limited handful), so the column's number of distinct values is set to half the rows: the
generic plan then finds a user's rows through the index (2 buffers where the scan read 39 for
1,800 attempts), which is never worse than the scan, since the index holds both conditions.
ANALYZE applies the setting at once where there are attempts; an empty table (a new database) is
left unanalysed, so that until its first ANALYZE the planner keeps sizing it as at least ten
pages and chooses the index too (analysed empty, it is planned at its true few pages: a scan).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Negative: a share of the rows (so it scales with the table), not a fixed count.
USERS_PER_ATTEMPT = -0.5


def _analyze_unless_empty() -> None:
    if op.get_bind().execute(sa.text("SELECT EXISTS (SELECT FROM posting_rate_attempts)")).scalar():
        op.execute("ANALYZE posting_rate_attempts")


def upgrade() -> None:
    op.execute(
        "ALTER TABLE posting_rate_attempts ALTER COLUMN user_id "
        f"SET (n_distinct = {USERS_PER_ATTEMPT})"
    )
    _analyze_unless_empty()


def downgrade() -> None:
    op.execute("ALTER TABLE posting_rate_attempts ALTER COLUMN user_id RESET (n_distinct)")
    _analyze_unless_empty()
