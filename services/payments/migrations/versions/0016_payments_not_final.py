"""The payments not final yet, by id: the consistency auditor's every-round read (OPS-3, issue 13).

Every audit round, incremental ones included, reads the payments still in flight (`state IN
('REQUIRES_ACTION', 'PROCESSING', 'AUTHORIZED', 'UNKNOWN') ... ORDER BY id LIMIT n`, paged). No
index held `state`, so PostgreSQL walked `payments_pkey` (or the table) through every payment
ever made, keeping the few in flight: the round grew with the history kept. `ix_payments_not_final`
holds the payments in those states only, in id order, so a round reads them alone.

Its cost on the posting path: an entry for the payment's insert and for each update while it is
not final (no payment update is HOT anyway: every one moves `updated_at` and `next_poll_at`, both
indexed); none once it is captured, voided or failed. Measured on the pay-to-post flow (300 card
postings, pg_waldump of the window): 3 B-tree insertions and 300 bytes of WAL per posting, of its
29.5 KB. The read names its states literally (the
repository's `literal_execute`), so a generic plan can prove the index's condition too.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The states of a payment that can still change on its own (domain/model.py's states that are
# neither TAKEN nor final failures); payments' tables.py says it in the same words.
NOT_FINAL = "state IN ('REQUIRES_ACTION', 'PROCESSING', 'AUTHORIZED', 'UNKNOWN')"


def upgrade() -> None:
    op.create_index(
        "ix_payments_not_final", "payments", ["id"], postgresql_where=sa.text(NOT_FINAL)
    )


def downgrade() -> None:
    op.drop_index("ix_payments_not_final", table_name="payments")
