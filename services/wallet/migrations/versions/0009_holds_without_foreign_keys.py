"""Holds lose their three foreign keys (issue 13: Reserve + Confirm).

Each new hold ran two referential checks when its statement ended (`fk_holds_account_id_accounts`,
`fk_holds_destination_account_id_accounts`) and each Confirm one more (`fk_holds_transfer_id_
transfers`, the hold saved with its transfer's id): a query each through the executor's SPI, an
index probe and a KEY SHARE row lock written to the referenced tuple (the payer's row, the payee's
row - every Reserve to one destination locking that one row, a multixact once two are in flight -
and the Confirm's own transfer row). A group of 32 Reserve + Confirm pairs: 2 WAL records and ~16
buffer hits per pair, 3 queries. What they guaranteed holds without them:

  - a hold's account and destination exist: every Try checks both (`check_reserve_accounts`, on
    the account rows or their immutable cached attributes) before its hold is written, the
    statement that writes it locks and updates the account's row (its pending balance; a missing
    row fails the Try), and no account is ever deleted or re-keyed (`accounts_never_deleted`,
    0007): an account that existed once exists for ever;
  - a confirmed hold's transfer exists: the Confirm writes the transfer and its entries in the
    transaction (the one statement) that saves the hold, and a transfer with entries is never
    deleted or re-keyed (`transfers_keep_entries`, 0007). The ledger audit's "confirmed hold
    without exactly its posted transfer" checks it from the tables.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FOREIGN_KEYS = (
    ("fk_holds_account_id_accounts", "accounts", "account_id", "id"),
    ("fk_holds_destination_account_id_accounts", "accounts", "destination_account_id", "id"),
    ("fk_holds_transfer_id_transfers", "transfers", "transfer_id", "id"),
)


def upgrade() -> None:
    for name, _, _, _ in _FOREIGN_KEYS:
        op.drop_constraint(name, "holds", type_="foreignkey")


def downgrade() -> None:
    for name, referred, column, key in _FOREIGN_KEYS:
        op.create_foreign_key(name, "holds", referred, [column], [key])
