"""The wallet's storage model: SQLAlchemy tables of the ledger (the migrations create them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    SmallInteger,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hirepay_platform.db import Base

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class WalletBase(Base):
    """Declarative base of the wallet's own tables (its own metadata, its own database)."""

    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING)


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class AccountRow(WalletBase):
    """An account. Ordinary accounts keep their posted balance here; sharded accounts (shards > 0)
    keep it in `account_shards` and only their pending balance here."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("owner_id", "unit", "kind"),
        CheckConstraint("pending >= 0", name="pending_not_negative"),
        # The last line of defence against an overdraft the application would let through.
        CheckConstraint(
            "allow_negative OR shards > 0 OR posted - pending >= 0", name="no_overdraft"
        ),
        CheckConstraint("shards >= 0", name="shards_not_negative"),
    )

    id: Mapped[str] = mapped_column(Uuid(as_uuid=False), primary_key=True)
    # Keyset order for listings (uuids have none).
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    owner_id: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    allow_negative: Mapped[bool] = mapped_column(Boolean)
    shards: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    posted: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    pending: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = _created_at()

    shard_rows: Mapped[list[AccountShardRow]] = relationship(lazy="raise", back_populates="account")


class AccountShardRow(WalletBase):
    """One slice of a sharded account's posted balance; the balance is the sum of its shards."""

    __tablename__ = "account_shards"

    account_id: Mapped[str] = mapped_column(
        Uuid(as_uuid=False), ForeignKey("accounts.id"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    posted: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    account: Mapped[AccountRow] = relationship(lazy="raise", back_populates="shard_rows")


class TransferRow(WalletBase):
    """A posted transfer; its client-chosen id is the idempotency key."""

    __tablename__ = "transfers"
    __table_args__ = (CheckConstraint("kind IN ('transfer', 'split', 'hold')", name="kind"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, server_default=text("''"))
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, server_default=text("'{}'"))
    # One digest per request field, to name the field of a mismatched retry.
    fingerprint: Mapped[dict[str, str]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created_at()

    entries: Mapped[list[EntryRow]] = relationship(
        lazy="raise", back_populates="transfer", order_by="EntryRow.id"
    )


class EntryRow(WalletBase):
    """One side of a transfer on one account (append-only; a trigger checks the zero sum)."""

    __tablename__ = "entries"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        # An account's history, newest first (keyset pagination on id).
        Index("ix_entries_account_history", "account_id", text("id DESC")),
        Index("ix_entries_transfer_id", "transfer_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    transfer_id: Mapped[str] = mapped_column(Text, ForeignKey("transfers.id"))
    account_id: Mapped[str] = mapped_column(Uuid(as_uuid=False), ForeignKey("accounts.id"))
    unit: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _created_at()

    transfer: Mapped[TransferRow] = relationship(lazy="raise", back_populates="entries")


class HoldRow(WalletBase):
    """A reservation of one branch of a global transaction."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("confirmed_amount BETWEEN 0 AND amount", name="confirmed_within_hold"),
        CheckConstraint("state IN ('pending', 'confirmed', 'cancelled', 'expired')", name="state"),
        CheckConstraint(
            "(state = 'pending') = (resolved_at IS NULL)", name="resolved_iff_not_pending"
        ),
        # The expiry worker scans only pending holds by expiry.
        Index("ix_holds_pending_expiry", "expires_at", postgresql_where=text("state = 'pending'")),
    )

    global_tx_id: Mapped[str] = mapped_column(Text, primary_key=True)
    branch_id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(Uuid(as_uuid=False), ForeignKey("accounts.id"))
    destination_account_id: Mapped[str] = mapped_column(
        Uuid(as_uuid=False), ForeignKey("accounts.id")
    )
    unit: Mapped[str] = mapped_column(Text)
    amount: Mapped[int] = mapped_column(BigInteger)
    confirmed_amount: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    state: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    transfer_id: Mapped[str | None] = mapped_column(Text, ForeignKey("transfers.id"))
    description: Mapped[str] = mapped_column(Text, server_default=text("''"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TccBarrierRow(WalletBase):
    """The TCC guard: one row per (branch, operation), written in the same local transaction as
    the business change it guards, so its existence proves the change committed."""

    __tablename__ = "tcc_barriers"
    __table_args__ = (
        CheckConstraint("op IN ('try', 'confirm', 'cancel')", name="op"),
        CheckConstraint("origin IN ('try', 'confirm', 'cancel')", name="origin"),
    )

    global_tx_id: Mapped[str] = mapped_column(Text, primary_key=True)
    branch_id: Mapped[str] = mapped_column(Text, primary_key=True)
    op: Mapped[str] = mapped_column(Text, primary_key=True)
    # Who wrote the row: a "try" row written by a Cancel marks a null compensation.
    origin: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created_at()
