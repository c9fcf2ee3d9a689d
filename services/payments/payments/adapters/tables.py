"""The payments database schema (SQLAlchemy Core tables; migrations create the same)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, UserDefinedType

from hirepay_platform.barrier import barrier_table

metadata = MetaData()


class JsonText(str):
    """JSON text that is stored as it is in a JSONB column typed `JsonbOrText` (PostgreSQL parses
    it), instead of a value serialized first."""

    __slots__ = ()


class JsonbOrText(TypeDecorator[Any]):
    """JSONB whose bound value may be the JSON text itself (JsonText): a webhook's payload is
    stored as the provider sent it (verified, and parsed once to read it) rather than serialized
    again from its parsed body, about 1.7 kB per event and two events per card posting (issue
    13). Any other value is serialized as JSONB serializes it."""

    impl = JSONB
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        serialize = self.impl_instance.bind_processor(dialect)

        def process(value: Any) -> Any:
            if type(value) is JsonText:
                return str.__str__(value)
            return serialize(value) if serialize is not None else value

        return process


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (`xid8`): written by its server default only."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


def _ts(name: str, nullable: bool = False) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


# Payments not final yet: the auditor's every-round read names its states literally, so that a
# generic plan proves this partial index's condition (migration 0016).
NOT_FINAL_PAYMENT = text("state IN ('REQUIRES_ACTION', 'PROCESSING', 'AUTHORIZED', 'UNKNOWN')")

payments = Table(
    "payments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("global_tx_id", String(200), nullable=False),
    Column("branch_id", String(200), nullable=False),
    Column("owner_id", String(200), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(16), nullable=False),
    Column("method", String(32), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("state", String(32), nullable=False),
    Column("fingerprint", Text, nullable=False, server_default=""),
    Column("payment_method_token", String(255), nullable=False, server_default=""),
    Column("description", Text, nullable=False, server_default=""),
    Column("email", String(320), nullable=False, server_default=""),
    Column("return_url", Text, nullable=False, server_default=""),
    Column("cancel_url", Text, nullable=False, server_default=""),
    Column("metadata", JSONB, nullable=False, server_default="{}"),
    Column("captured_minor", BigInteger, nullable=False, server_default="0"),
    Column("refunded_minor", BigInteger, nullable=False, server_default="0"),
    # Unique among the ids the provider gave (migration 0012: a NULL id is not indexed).
    Column("provider_payment_id", String(255), nullable=True),
    Column("provider_checkout_id", String(255), nullable=True),
    Column("provider_customer_id", String(255), nullable=False, server_default=""),
    Column("next_action_url", Text, nullable=False, server_default=""),
    Column("failure_reason", String(64), nullable=False, server_default=""),
    Column("failure_code", String(64), nullable=False, server_default=""),
    Column("decline_code", String(64), nullable=False, server_default=""),
    Column("failure_message", Text, nullable=False, server_default=""),
    Column("authorize_key", String(500), nullable=False, server_default=""),
    Column("capture_key", String(500), nullable=False, server_default=""),
    Column("void_key", String(500), nullable=False, server_default=""),
    Column("capture_amount_minor", BigInteger, nullable=False, server_default="0"),
    Column("pending_op", String(16), nullable=True),
    Column("void_requested", Boolean, nullable=False, server_default="false"),
    Column("void_reason", Text, nullable=False, server_default=""),
    _ts("next_poll_at", nullable=True),
    Column("poll_attempts", Integer, nullable=False, server_default="0"),
    _ts("created_at"),
    _ts("updated_at"),
    UniqueConstraint("global_tx_id", "branch_id", name="uq_payments_branch"),
    Index(
        "uq_payments_provider_payment_id",
        "provider_payment_id",
        unique=True,
        postgresql_where=text("provider_payment_id IS NOT NULL"),
    ),
    Index(
        "uq_payments_provider_checkout_id",
        "provider_checkout_id",
        unique=True,
        postgresql_where=text("provider_checkout_id IS NOT NULL"),
    ),
    Index("ix_payments_next_poll_at", "next_poll_at", postgresql_where="next_poll_at IS NOT NULL"),
    # The provider reconciliation's most recently changed payments (migration 0008).
    Index("ix_payments_updated_at", "updated_at"),
    # The auditor's payments still in flight, by id (OPS-3, migration 0016).
    Index("ix_payments_not_final", "id", postgresql_where=NOT_FINAL_PAYMENT),
)

# When the provider reconciliation last completed a check of each payment, and what it found
# (OPS-3, migration 0017): a round checks the payments of its window never checked, then the
# longest unchecked, and answers the findings of those it did not reach as of their last check.
payment_reconciliations = Table(
    "payment_reconciliations",
    metadata,
    Column("payment_id", String(64), primary_key=True),
    _ts("checked_at"),
    Column("mismatches", JSONB, nullable=False, server_default="[]"),
    # Since when its checks found the provider unreadable (migration 0018; NULL: read).
    _ts("unreadable_since", nullable=True),
    # Records not renewed for long (payments that left the window) forgotten oldest first.
    Index("ix_payment_reconciliations_checked_at", "checked_at"),
    # The open records (findings, or unreadable), longest unchecked first: checked again every
    # round (migration 0018).
    Index(
        "ix_payment_reconciliations_open",
        "checked_at",
        postgresql_where=text("mismatches <> '[]'::jsonb OR unreadable_since IS NOT NULL"),
    ),
)

# The reconciliation sweep's cursor, one row (migration 0018): the (updated_at, id) of the last
# payment its pass went past, and when the pass began.
payment_reconciliation_sweep = Table(
    "payment_reconciliation_sweep",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    _ts("after_updated_at", nullable=True),
    Column("after_id", String(64), nullable=True),
    _ts("pass_started_at"),
    CheckConstraint("id = 1", name="ck_payment_reconciliation_sweep_one_row"),
)

# The reconciliation's pass through paid plan purchases of a provider that sends no refund event
# (Fatora), one row per provider (migration 0024): the (updated_at, id) of the last purchase its
# pass went past, and when the pass began.
purchase_reconciliation_sweeps = Table(
    "purchase_reconciliation_sweeps",
    metadata,
    Column("provider", String(32), primary_key=True),
    _ts("after_updated_at", nullable=True),
    Column("after_id", String(64), nullable=True),
    _ts("pass_started_at"),
)

# The platform's TCC barrier (insert-first; a "try" row written by a Cancel = null compensation).
tcc_barriers = barrier_table(metadata)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("payment_id", String(64), nullable=False),
    Column("request_id", String(200), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("requested_minor", BigInteger, nullable=False),
    Column("currency", String(16), nullable=False),
    Column("reason", String(200), nullable=False, server_default=""),
    Column("status", String(16), nullable=False),
    Column("idempotency_key", String(500), nullable=False),
    Column("provider_refund_id", String(255), nullable=True, unique=True),
    Column("failure_message", Text, nullable=False, server_default=""),
    _ts("next_poll_at", nullable=True),
    Column("poll_attempts", Integer, nullable=False, server_default="0"),
    # The coins the refund takes back and its hold's progress (0 and "": the payment issued none).
    Column("coins", BigInteger, nullable=False, server_default="0"),
    Column("coins_state", String(16), nullable=False, server_default=""),
    _ts("created_at"),
    _ts("updated_at"),
    UniqueConstraint("payment_id", "request_id", name="uq_refunds_request"),
    Index("ix_refunds_next_poll_at", "next_poll_at", postgresql_where="next_poll_at IS NOT NULL"),
    # The auditor's incremental bookings check: refunds changed since its last round (0015).
    Index("ix_refunds_updated_at", "updated_at"),
)

transactions = Table(
    "transactions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("user_type", String(16), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(16), nullable=False),
    Column("payment_method", String(32), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("plan", String(64), nullable=False),
    Column("period_days", Integer, nullable=False),
    Column("request_id", String(200), nullable=False),
    Column("return_url", Text, nullable=False),
    Column("cancel_url", Text, nullable=False),
    Column("checkout_key", String(500), nullable=False, server_default=""),
    Column("expire_key", String(500), nullable=False, server_default=""),
    Column("provider_transaction_id", String(255), nullable=True, unique=True),
    Column("provider_payment_intent_id", String(255), nullable=True, unique=True),
    Column("provider_customer_id", String(255), nullable=False, server_default=""),
    Column("checkout_url", Text, nullable=False, server_default=""),
    _ts("expires_at", nullable=True),
    Column("subscription_start_date", Date, nullable=True),
    Column("subscription_end_date", Date, nullable=True),
    Column("failure_reason", String(64), nullable=False, server_default=""),
    Column("failure_code", String(64), nullable=False, server_default=""),
    Column("decline_code", String(64), nullable=False, server_default=""),
    Column("failure_message", Text, nullable=False, server_default=""),
    Column("metadata", JSONB, nullable=False, server_default="{}"),
    _ts("created_at"),
    _ts("updated_at"),
    UniqueConstraint("user_type", "user_id", "request_id", name="uq_transactions_request"),
    Index("ix_transactions_user", "user_id", "user_type"),
    Index("ix_transactions_email", "email"),
    Index("ix_transactions_status", "status"),
    Index("ix_transactions_created", "created_at"),
    # The auditor's incremental bookings check: transactions changed since its last round (0015).
    Index("ix_transactions_updated_at", "updated_at"),
)

provider_events = Table(
    "provider_events",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("event_id", String(255), nullable=False, unique=True),
    Column("event_type", String(100), nullable=False),
    Column("object_id", String(255), nullable=False, server_default=""),
    Column("payload", JsonbOrText, nullable=False),
    Column("applied", Boolean, nullable=False),
    _ts("provider_created_at"),
    _ts("received_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("cursor", BigInteger, Identity(), primary_key=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("subsystem", String(64), nullable=False, server_default=""),
    Column("payment_id", String(64), nullable=True),
    Column("transaction_id", String(64), nullable=True),
    Column("snapshot", JSONB, nullable=False),
    _ts("occurred_at"),
    # Signed HTTP callbacks to the subsystem (API-5): NULL when no callback is due.
    _ts("callback_next_at", nullable=True),
    Column("callback_attempts", Integer, nullable=False, server_default="0"),
    _ts("callback_delivered_at", nullable=True),
    # The position published before migration 0020 (the stream's old part, in this order); NULL
    # for every row written since.
    Column("position", BigInteger, nullable=True),
    # The writing transaction (0020): the stream is the rows in (writer_xid, cursor) order below
    # the reading snapshot's xmin (outbox_after); NULL on rows written before 0020.
    Column("writer_xid", Xid8, nullable=True, server_default=text("pg_current_xact_id()")),
    # The callback relay's due rows in cursor order, undelivered ones only (migration 0009); its
    # one index (0013).
    Index("ix_outbox_callbacks_due", "cursor", postgresql_where="callback_next_at IS NOT NULL"),
    # The stream's old part: a consumer's read after a position, of every subsystem or of one
    # (0006, 0011): an index probe whatever the outbox's statistics.
    Index("ix_outbox_position", "position", unique=True, postgresql_where="position IS NOT NULL"),
    Index(
        "ix_outbox_subsystem_position",
        "subsystem",
        "position",
        postgresql_where="position IS NOT NULL",
    ),
    # The stream since 0020, the same two reads.
    Index("ix_outbox_stream", "writer_xid", "cursor", postgresql_where="position IS NULL"),
    Index(
        "ix_outbox_subsystem_stream",
        "subsystem",
        "writer_xid",
        "cursor",
        postgresql_where="position IS NULL",
    ),
)

# No index by `id` (migration 0025): lines are read by payment or by transaction only; every id
# comes from the column's sequence (GENERATED ALWAYS), so ids stay distinct and in order.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(always=True), nullable=False),
    Column("payment_id", String(64), nullable=True),
    Column("transaction_id", String(64), nullable=True),
    Column("action", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("details", JSONB, nullable=False),
    _ts("created_at"),
    # A line names a payment or a transaction: each index holds only the lines that name its own
    # (migration 0012; `= value` implies the condition, generic plans included).
    Index(
        "ix_audit_log_payment", "payment_id", "id", postgresql_where=text("payment_id IS NOT NULL")
    ),
    Index(
        "ix_audit_log_transaction",
        "transaction_id",
        "id",
        postgresql_where=text("transaction_id IS NOT NULL"),
    ),
)

# A grant still owed to the wallet: the booking worker's partial index and its lease share this
# literal condition (issue 13: a condition with a bound parameter cannot use the partial index
# once the statement's plan is generic; the lease then read and sorted every grant ever made).
PENDING_GRANT = text("status = 'pending'")

# A grant of a plan purchase (a payment's bookings have none): the condition of the transaction
# index and of its one read, in the same words (migration 0012; a bound value implies nothing to
# a generic plan).
OF_A_TRANSACTION = text("transaction_id <> ''")
# The bookings the ledger auditor reads by kind, each rare (a dispute's money, a refund that failed
# after it succeeded, a purchase's refund in part): their own partial index by `created_at`
# (migration 0021), so an audit round reads them without scanning every posting's booking; the
# read says it in the same words (a literal: a generic plan proves it too).
AUDITED_GRANT_KINDS = ("dispute", "purchase_refund", "refund_failed")
OF_AN_AUDITED_KIND = text(
    "credit_grants.kind IN (" + ", ".join(f"'{k}'" for k in AUDITED_GRANT_KINDS) + ")"
)

# Credits a settled plan purchase owes on the wallet's ledger (issue on payment, revoke on refund),
# written in the same transaction as the settlement and retried until the wallet acknowledges.
credit_grants = Table(
    "credit_grants",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("transaction_id", String(64), nullable=False),
    Column("user_type", String(16), nullable=True),
    Column("user_id", String(200), nullable=False),
    Column("granted", JSONB, nullable=False),
    Column("amounts", JSONB, nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    _ts("next_attempt_at"),
    _ts("created_at"),
    _ts("done_at", nullable=True),
    Column("last_error", Text, nullable=False, server_default=""),
    # Ledger bookings of payments (0004): the provider whose clearing account the money goes
    # through, the payment (and refund) booked, and the transfer's legs fixed when recorded.
    Column("provider", String(32), nullable=False, server_default=""),
    Column("payment_id", String(64), nullable=False, server_default=""),
    Column("refund_id", String(64), nullable=False, server_default=""),
    Column("legs", JSONB, nullable=True),
    # The booking worker's lease (0023): in no index, so that taking it is a HOT update.
    _ts("lease_until", nullable=True),
    Index("ix_credit_grants_due", "next_attempt_at", postgresql_where=PENDING_GRANT),
    Index("ix_credit_grants_transaction", "transaction_id", postgresql_where=OF_A_TRANSACTION),
    Index("ix_credit_grants_payment", "payment_id"),
    Index("ix_credit_grants_audited", "created_at", postgresql_where=OF_AN_AUDITED_KIND),
)

# Card disputes (chargebacks) of payments, one per provider dispute (migration 0019): the money
# withdrawn and reinstated so far and the provider's fees, as its balance transactions said.
disputes = Table(
    "disputes",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("payment_id", String(64), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(16), nullable=False),
    Column("reason", String(64), nullable=False, server_default=""),
    Column("status", String(32), nullable=False),
    Column("withdrawn_minor", BigInteger, nullable=False, server_default="0"),
    Column("reinstated_minor", BigInteger, nullable=False, server_default="0"),
    Column("fee_minor", BigInteger, nullable=False, server_default="0"),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("closed_at", nullable=True),
    # The provider's update time of the newest view applied (migration 0022).
    _ts("provider_updated_at", nullable=True),
    Index("ix_disputes_payment", "payment_id"),
)

# Payout accounts at the provider (a Stripe Connect account per user), ESC-9.
payout_accounts = Table(
    "payout_accounts",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("provider_account_id", String(100), nullable=False, unique=True),
    Column("state", String(16), nullable=False),
    Column("onboarding_url", Text, nullable=False, server_default=""),
    _ts("created_at"),
    _ts("updated_at"),
)

# A withdrawal not final: on its way, or paid and then returned by the bank (the money still to be
# credited back); and one paid, watched a while for a return. Literal conditions, shared by the
# withdrawal worker's partial indexes and its queries (issue 13: with bound states no plan could
# use an index, and every round read every withdrawal ever made). Parenthesised: they are
# combined with other conditions as they are.
UNFINISHED_WITHDRAWAL = text(
    "(state IN ('requested', 'sending', 'in_transit') OR (state = 'paid' AND outcome = 'returned'))"
)
PAID_WITHDRAWAL = text("(state = 'paid' AND outcome = 'paid')")

# Withdrawals: wallet hold -> provider transfer + payout -> hold posted (paid) or released (failed);
# `next_attempt_at` is the recovery worker's schedule (and its lease) while not final.
withdrawals = Table(
    "withdrawals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(200), nullable=False),
    Column("request_id", String(200), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("provider_account_id", String(100), nullable=False),
    Column("state", String(16), nullable=False),
    Column("outcome", String(16), nullable=False, server_default=""),
    Column("transfer_id", String(100), nullable=False, server_default=""),
    Column("payout_id", String(100), nullable=False, server_default=""),
    Column("reversal_id", String(100), nullable=False, server_default=""),
    Column("failure_code", String(64), nullable=False, server_default=""),
    Column("failure_message", Text, nullable=False, server_default=""),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=False, server_default=""),
    _ts("next_attempt_at"),
    _ts("created_at"),
    _ts("updated_at"),
    UniqueConstraint("user_id", "request_id", name="uq_withdrawals_user_request"),
    CheckConstraint("amount_minor > 0", name="ck_withdrawals_amount_positive"),
    Index("ix_withdrawals_user_created", "user_id", "created_at"),
    Index("ix_withdrawals_payout", "payout_id"),
    Index("ix_withdrawals_due", "next_attempt_at", postgresql_where=UNFINISHED_WITHDRAWAL),
    Index("ix_withdrawals_paid_watch", "updated_at", postgresql_where=PAID_WITHDRAWAL),
)
