"""Index entries only for the rows a query can look up (issue 13): a card posting wrote 18 B-tree
entries into payments' indexes that no query can ever read.

A B-tree holds a row whose key is NULL (or, for a lookup that never asks for it, empty) like any
other: each insert and each non-HOT update of the row writes the entry, its WAL record and, now
and then, a page split or a full-page image. Measured on the pay-to-post bench (per posting, c=32,
pg_waldump of the measured window), of the 102 B-tree insertions per posting:

- `ix_audit_log_transaction`: 7, one per audit line of the payment, every one with a NULL
  transaction (a payment's lines name the payment; a plan purchase's lines name the transaction).
  Now partial, `WHERE transaction_id IS NOT NULL`; `ix_audit_log_payment` likewise for the
  purchase's lines. Their only reads (`list_for_transaction`, `list_for_payment`) ask `= value`,
  which implies the condition in every plan, generic ones too (PostgreSQL proves IS NOT NULL from
  a strict operator on the column, whatever the parameter).
- `payments_provider_checkout_id_key`: 4 (the insert and three updates), always NULL for a card
  payment (only a hosted checkout has one); `payments_provider_payment_id_key`: 1 (the insert,
  before the provider has answered). The UNIQUE constraints become unique indexes of the non-NULL
  ids: the same guarantee (NULLs never conflicted), the same lookups by `= value`.
- `ix_credit_grants_transaction`: 3 (the booking's insert and two updates), every one with an
  empty transaction id (a payment's capture books by payment; only a plan purchase's grant has a
  transaction). Now `WHERE transaction_id <> ''`; its one read (`for_transaction`) says so in
  the same words, since a generic plan cannot prove it from a bound value.

No row changes; every lookup that used an index uses the same one (tests/payments/integration/
test_partial_indexes_pg.py pins the plans on populated tables, generic plans included).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, columns, condition) as they are now, and as they were.
_PARTIAL = [
    (
        "ix_audit_log_transaction",
        "audit_log",
        ["transaction_id", "id"],
        "transaction_id IS NOT NULL",
    ),
    ("ix_audit_log_payment", "audit_log", ["payment_id", "id"], "payment_id IS NOT NULL"),
    ("ix_credit_grants_transaction", "credit_grants", ["transaction_id"], "transaction_id <> ''"),
]
# (unique constraint, its column, the unique index that takes its place) on payments.
_UNIQUE = [
    ("payments_provider_payment_id_key", "provider_payment_id", "uq_payments_provider_payment_id"),
    (
        "payments_provider_checkout_id_key",
        "provider_checkout_id",
        "uq_payments_provider_checkout_id",
    ),
]


def upgrade() -> None:
    for name, table, columns, condition in _PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns, postgresql_where=sa.text(condition))
    for constraint, column, index in _UNIQUE:
        # The new index first: the column is never without its uniqueness check.
        op.create_index(
            index,
            "payments",
            [column],
            unique=True,
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
        )
        op.drop_constraint(constraint, "payments", type_="unique")


def downgrade() -> None:
    for constraint, column, index in _UNIQUE:
        op.create_unique_constraint(constraint, "payments", [column])
        op.drop_index(index, table_name="payments")
    for name, table, columns, _condition in _PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns)
