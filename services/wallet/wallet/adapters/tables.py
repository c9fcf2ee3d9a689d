"""The wallet's storage model: SQLAlchemy Core tables of the ledger (the migrations create them).

Constraint names are written out in full, exactly as the Alembic revisions created them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from hirepay_platform.barrier import barrier_table

metadata = MetaData()


def _created_at() -> Column[datetime]:
    return Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False)


# An account. Ordinary accounts keep their posted balance here; sharded accounts (shards > 0) keep
# it in `account_shards` and only their pending balance here.
accounts = Table(
    "accounts",
    metadata,
    Column("id", Uuid(as_uuid=False), nullable=False),
    # Keyset order for listings (uuids have none).
    Column("seq", BigInteger, Identity(always=True), nullable=False),
    Column("owner_id", Text, nullable=False),
    Column("unit", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("allow_negative", Boolean, nullable=False),
    Column("shards", SmallInteger, server_default=text("0"), nullable=False),
    Column("posted", BigInteger, server_default=text("0"), nullable=False),
    Column("pending", BigInteger, server_default=text("0"), nullable=False),
    _created_at(),
    PrimaryKeyConstraint("id", name="pk_accounts"),
    UniqueConstraint("owner_id", "unit", "kind", name="uq_accounts_owner_id_unit_kind"),
    UniqueConstraint("seq", name="uq_accounts_seq"),
    CheckConstraint("pending >= 0", name="ck_accounts_pending_not_negative"),
    # The last line of defence against an overdraft the application would let through.
    CheckConstraint(
        "allow_negative OR shards > 0 OR posted - pending >= 0", name="ck_accounts_no_overdraft"
    ),
    CheckConstraint("shards >= 0", name="ck_accounts_shards_not_negative"),
    # The admin balance listing filtered by kind, in opening order.
    Index("ix_accounts_kind_seq", "kind", "seq"),
)

# One slice of a sharded account's posted balance; the balance is the sum of its shards.
account_shards = Table(
    "account_shards",
    metadata,
    Column("account_id", Uuid(as_uuid=False), nullable=False),
    Column("shard", SmallInteger, nullable=False),
    Column("posted", BigInteger, server_default=text("0"), nullable=False),
    PrimaryKeyConstraint("account_id", "shard", name="pk_account_shards"),
    ForeignKeyConstraint(
        ["account_id"], ["accounts.id"], name="fk_account_shards_account_id_accounts"
    ),
)

# A posted transfer; its client-chosen id is the idempotency key.
transfers = Table(
    "transfers",
    metadata,
    Column("id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("description", Text, server_default=text("''"), nullable=False),
    Column("metadata", JSONB, server_default=text("'{}'"), nullable=False),
    # One digest per request field, to name the field of a mismatched retry.
    Column("fingerprint", JSONB, nullable=False),
    _created_at(),
    PrimaryKeyConstraint("id", name="pk_transfers"),
    CheckConstraint("kind IN ('transfer', 'split', 'hold')", name="ck_transfers_kind"),
)

# One side of a transfer on one account (append-only; a trigger checks the zero sum at commit).
entries = Table(
    "entries",
    metadata,
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("transfer_id", Text, nullable=False),
    Column("account_id", Uuid(as_uuid=False), nullable=False),
    Column("unit", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    _created_at(),
    PrimaryKeyConstraint("id", name="pk_entries"),
    # No foreign keys (0007): the commit-time guard checks each transfer's row and its entries'
    # accounts once per transfer (0010: a statement's transfers all in one query, with the
    # statement), and triggers keep a transfer with entries and every account from being
    # deleted; two referential checks per entry were a fee's largest database cost.
    CheckConstraint("amount <> 0", name="ck_entries_amount_not_zero"),
    # An account's history, newest first (keyset pagination on id).
    Index("ix_entries_account_history", "account_id", text("id DESC")),
    Index("ix_entries_transfer_id", "transfer_id"),
    # An account's entries in a time range (commission earnings: platform revenue by period).
    Index("ix_entries_account_time", "account_id", "created_at"),
    # The auditor's incremental zero-sum check: entries created since its last round (0006).
    Index(
        "ix_entries_created_brin",
        "created_at",
        postgresql_using="brin",
        postgresql_with={"pages_per_range": 32, "autosummarize": "on"},
    ),
)

# A reservation of one branch of a global transaction.
# A hold still pending: the expiry worker's partial index and its lease share this literal
# condition (issue 13: a condition with a bound parameter cannot use the partial index once the
# statement's plan is generic; each round then read every hold ever made).
HOLD_IS_PENDING = text("state = 'pending'")

holds = Table(
    "holds",
    metadata,
    Column("global_tx_id", Text, nullable=False),
    Column("branch_id", Text, nullable=False),
    Column("account_id", Uuid(as_uuid=False), nullable=False),
    Column("destination_account_id", Uuid(as_uuid=False), nullable=False),
    Column("unit", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("confirmed_amount", BigInteger, server_default=text("0"), nullable=False),
    Column("state", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("transfer_id", Text, nullable=True),
    Column("description", Text, server_default=text("''"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("global_tx_id", "branch_id", name="pk_holds"),
    # No foreign keys (0009): every Try checks both accounts before it writes its hold, a Confirm
    # writes its transfer with the hold saved, and neither an account nor a transfer with entries
    # is ever deleted (0007); three referential checks (a query and a row lock each) per Reserve +
    # Confirm were a pair's database cost.
    CheckConstraint("amount > 0", name="ck_holds_amount_positive"),
    CheckConstraint("confirmed_amount BETWEEN 0 AND amount", name="ck_holds_confirmed_within_hold"),
    CheckConstraint(
        "state IN ('pending', 'confirmed', 'cancelled', 'expired')", name="ck_holds_state"
    ),
    CheckConstraint(
        "(state = 'pending') = (resolved_at IS NULL)", name="ck_holds_resolved_iff_not_pending"
    ),
    # The expiry worker scans only pending holds by expiry.
    Index("ix_holds_pending_expiry", "expires_at", postgresql_where=HOLD_IS_PENDING),
)

# The platform's TCC barrier: one row per (branch, operation), written in the same local
# transaction as the business change it guards (revision 0002 aligned the columns with it).
tcc_barriers = barrier_table(metadata)
