"""Account rows keep half of each page free, so that a balance update stays on its row's page (a
HOT update, no index entry) (issue 13: grouped transfers).

Every posting updates its account rows (posted, pending), columns no index covers, so PostgreSQL
can write the new row version on the same page without touching the table's four indexes (its
key, owner, seq, and kind-and-seq) - if the page has room. At the default fillfactor (100) the
pages are packed full when accounts are opened; a group of transfers updates every payer's and
payee's row in one statement, and the dead versions of the group before are pruned only when a
page is visited with no other pin on it. A group of 32 transfers (64 account rows on two pages)
wrote 24 of its 64 row versions to another page, each with four index entries: 96 B-tree inserts
of the group's 386, 21 WAL records per transfer, 57 buffer hits per transfer (PostgreSQL 15,
pg_stat_statements, pg_waldump). With half of each page free, every one was HOT: 17 WAL records,
1,827 WAL bytes (was 2,158) and 47 buffer hits per transfer. Half as many rows per page is a
table twice the size, the accounts' being the ledger's smallest; entries, transfers and holds are
append-mostly and keep the default.

The setting applies to pages filled from now on: rows of an existing database move to pages with
room as they are updated, or at once by a table rewrite (VACUUM FULL accounts, off-peak).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE accounts SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE accounts RESET (fillfactor)")
