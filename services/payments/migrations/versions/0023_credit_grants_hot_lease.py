"""The booking worker's lease is a HOT update (issue 13): `credit_grants.lease_until`, not indexed.

Every posting's capture owes one booking (a `credit_grants` row); the booking worker leased it by
moving `next_attempt_at` past the lease, a column of `ix_credit_grants_due`, so the lease could
never be a HOT update: a new tuple in the pkey, the due and the payment indexes, then once more when
the booking is marked done (its `status` is the due index's condition). The lease now writes
`lease_until`, which no index holds, and the due read skips rows leased until later: the lease is
HOT whenever the row's page has room, which `fillfactor` 80 keeps for it (a booking is updated
twice after its insert, never again). A nullable column without a default: no table rewrite; the
fillfactor applies to the pages written from now on.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "credit_grants", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute("ALTER TABLE credit_grants SET (fillfactor = 80)")


def downgrade() -> None:
    op.execute("ALTER TABLE credit_grants RESET (fillfactor)")
    op.drop_column("credit_grants", "lease_until")
