"""Job transitions keep one index, their primary key by job (issue 13).

Every card posting appends three transitions (draft, pending payment, active), and each was
inserted into two B-trees: the primary key on `id` and `ix_job_transitions_job_id`. Only the
second was ever read (a job's history: `WHERE job_id = ? ORDER BY id`); nothing looks a
transition up by its id alone, no row refers to one, and rows are never updated or deleted (a
trigger refuses both). The primary key is now `(job_id, id)`: the history reads its rows in order
from it, no sort, and `id` (from its sequence, as before) keeps every row distinct, so the
second index goes: three B-tree insertions and their WAL records fewer per posting.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 13:05:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PKEY = "job_transitions_pkey"


def upgrade() -> None:
    op.drop_constraint(_PKEY, "job_transitions", type_="primary")
    op.create_primary_key(_PKEY, "job_transitions", ["job_id", "id"])
    op.drop_index("ix_job_transitions_job_id", table_name="job_transitions")


def downgrade() -> None:
    op.create_index("ix_job_transitions_job_id", "job_transitions", ["job_id"], unique=False)
    op.drop_constraint(_PKEY, "job_transitions", type_="primary")
    op.create_primary_key(_PKEY, "job_transitions", ["id"])
