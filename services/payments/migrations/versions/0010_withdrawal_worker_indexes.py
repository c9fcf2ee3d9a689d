"""Indexes for the withdrawal recovery worker's round (issue 13).

The worker leases due unfinished withdrawals and paid ones whose return watch is due. Its
condition named the states as bound parameters and joined the paid-recently part with OR, which
`ix_withdrawals_due` (open states only) could not serve: every round read every withdrawal ever
made. The lease now names its states literally, `ix_withdrawals_due` holds every unfinished
withdrawal (a paid one returned by the bank included, as the worker and the auditor read them),
and `ix_withdrawals_paid_watch` the paid ones by `updated_at`, so a round reads the unfinished
and the recently paid only.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 05:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFINISHED = (
    "(state IN ('requested', 'sending', 'in_transit') OR (state = 'paid' AND outcome = 'returned'))"
)
_PAID = "(state = 'paid' AND outcome = 'paid')"


def upgrade() -> None:
    op.drop_index("ix_withdrawals_due", table_name="withdrawals")
    op.create_index(
        "ix_withdrawals_due",
        "withdrawals",
        ["next_attempt_at"],
        postgresql_where=sa.text(_UNFINISHED),
    )
    op.create_index(
        "ix_withdrawals_paid_watch",
        "withdrawals",
        ["updated_at"],
        postgresql_where=sa.text(_PAID),
    )


def downgrade() -> None:
    op.drop_index("ix_withdrawals_paid_watch", table_name="withdrawals")
    op.drop_index("ix_withdrawals_due", table_name="withdrawals")
    op.create_index(
        "ix_withdrawals_due",
        "withdrawals",
        ["next_attempt_at"],
        postgresql_where=sa.text("state IN ('requested', 'sending', 'in_transit')"),
    )
