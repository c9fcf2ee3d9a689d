"""The saga log keeps its primary key only (issue 13): `ix_saga_log_saga_id` is dropped.

Every card posting appends three lines to the saga log (its first step, the Try's answer, the
Confirm), and each line was also inserted into `ix_saga_log_saga_id`: a B-tree insertion, its WAL
record and now and then a full-page image, in the statement the posting waits for. Nothing reads
it: the service only appends to the log (an audit trail for people), no query of it goes by saga,
and no saga is ever deleted or re-keyed (the foreign key's only use of such an index). The foreign
key itself stays: a log line still names an existing saga.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 07:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_saga_log_saga_id", table_name="saga_log")


def downgrade() -> None:
    op.create_index("ix_saga_log_saga_id", "saga_log", ["saga_id"], unique=False)
