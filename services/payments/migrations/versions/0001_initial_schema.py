"""Initial payments schema: payments, TCC barriers, refunds, transactions, provider events,
the settlement outbox and the append-only audit log (a trigger refuses UPDATE and DELETE).

Revision ID: 0001
Revises:
Create Date: 2026-11-21 22:02:43.368975
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=True),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_payment", "audit_log", ["payment_id", "id"], unique=False)
    op.create_index("ix_audit_log_transaction", "audit_log", ["transaction_id", "id"], unique=False)
    op.create_table(
        "outbox",
        sa.Column("cursor", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("subsystem", sa.String(length=64), server_default="", nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=True),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("snapshot", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("callback_next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("callback_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("callback_delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("cursor"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index(
        "ix_outbox_callback_next_at",
        "outbox",
        ["callback_next_at"],
        unique=False,
        postgresql_where="callback_next_at IS NOT NULL",
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("global_tx_id", sa.String(length=200), nullable=False),
        sa.Column("branch_id", sa.String(length=200), nullable=False),
        sa.Column("owner_id", sa.String(length=200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.Text(), server_default="", nullable=False),
        sa.Column("payment_method_token", sa.String(length=255), server_default="", nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("email", sa.String(length=320), server_default="", nullable=False),
        sa.Column("return_url", sa.Text(), server_default="", nullable=False),
        sa.Column("cancel_url", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "metadata", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("captured_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("provider_payment_id", sa.String(length=255), nullable=True),
        sa.Column("provider_checkout_id", sa.String(length=255), nullable=True),
        sa.Column("provider_customer_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("next_action_url", sa.Text(), server_default="", nullable=False),
        sa.Column("failure_reason", sa.String(length=64), server_default="", nullable=False),
        sa.Column("failure_code", sa.String(length=64), server_default="", nullable=False),
        sa.Column("decline_code", sa.String(length=64), server_default="", nullable=False),
        sa.Column("failure_message", sa.Text(), server_default="", nullable=False),
        sa.Column("authorize_key", sa.String(length=500), server_default="", nullable=False),
        sa.Column("capture_key", sa.String(length=500), server_default="", nullable=False),
        sa.Column("void_key", sa.String(length=500), server_default="", nullable=False),
        sa.Column("capture_amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("pending_op", sa.String(length=16), nullable=True),
        sa.Column("void_requested", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("void_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("poll_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("global_tx_id", "branch_id", name="uq_payments_branch"),
        sa.UniqueConstraint("provider_checkout_id"),
        sa.UniqueConstraint("provider_payment_id"),
    )
    op.create_index(
        "ix_payments_next_poll_at",
        "payments",
        ["next_poll_at"],
        unique=False,
        postgresql_where="next_poll_at IS NOT NULL",
    )
    op.create_table(
        "provider_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("object_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("provider_created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("requested_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=200), server_default="", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=500), nullable=False),
        sa.Column("provider_refund_id", sa.String(length=255), nullable=True),
        sa.Column("failure_message", sa.Text(), server_default="", nullable=False),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("poll_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("payment_id", "request_id", name="uq_refunds_request"),
        sa.UniqueConstraint("provider_refund_id"),
    )
    op.create_index(
        "ix_refunds_next_poll_at",
        "refunds",
        ["next_poll_at"],
        unique=False,
        postgresql_where="next_poll_at IS NOT NULL",
    )
    op.create_table(
        "tcc_barriers",
        sa.Column("global_tx_id", sa.String(length=200), nullable=False),
        sa.Column("branch_id", sa.String(length=200), nullable=False),
        sa.Column("op", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("global_tx_id", "branch_id", "op", name="pk_tcc_barriers"),
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("user_type", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("payment_method", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("plan", sa.String(length=64), nullable=False),
        sa.Column("period_days", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("return_url", sa.Text(), nullable=False),
        sa.Column("cancel_url", sa.Text(), nullable=False),
        sa.Column("checkout_key", sa.String(length=500), server_default="", nullable=False),
        sa.Column("expire_key", sa.String(length=500), server_default="", nullable=False),
        sa.Column("provider_transaction_id", sa.String(length=255), nullable=True),
        sa.Column("provider_payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("provider_customer_id", sa.String(length=255), server_default="", nullable=False),
        sa.Column("checkout_url", sa.Text(), server_default="", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("subscription_start_date", sa.Date(), nullable=True),
        sa.Column("subscription_end_date", sa.Date(), nullable=True),
        sa.Column("failure_reason", sa.String(length=64), server_default="", nullable=False),
        sa.Column("failure_code", sa.String(length=64), server_default="", nullable=False),
        sa.Column("decline_code", sa.String(length=64), server_default="", nullable=False),
        sa.Column("failure_message", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "metadata", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider_payment_intent_id"),
        sa.UniqueConstraint("provider_transaction_id"),
        sa.UniqueConstraint("user_type", "user_id", "request_id", name="uq_transactions_request"),
    )
    op.create_index("ix_transactions_created", "transactions", ["created_at"], unique=False)
    op.create_index("ix_transactions_email", "transactions", ["email"], unique=False)
    op.create_index("ix_transactions_status", "transactions", ["status"], unique=False)
    op.create_index("ix_transactions_user", "transactions", ["user_id", "user_type"], unique=False)

    # PAY-15: the audit trail is append-only, enforced by the database itself.
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END;
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log")
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_index("ix_transactions_user", table_name="transactions")
    op.drop_index("ix_transactions_status", table_name="transactions")
    op.drop_index("ix_transactions_email", table_name="transactions")
    op.drop_index("ix_transactions_created", table_name="transactions")
    op.drop_table("transactions")
    op.drop_table("tcc_barriers")
    op.drop_index(
        "ix_refunds_next_poll_at", table_name="refunds", postgresql_where="next_poll_at IS NOT NULL"
    )
    op.drop_table("refunds")
    op.drop_table("provider_events")
    op.drop_index(
        "ix_payments_next_poll_at",
        table_name="payments",
        postgresql_where="next_poll_at IS NOT NULL",
    )
    op.drop_table("payments")
    op.drop_index(
        "ix_outbox_callback_next_at",
        table_name="outbox",
        postgresql_where="callback_next_at IS NOT NULL",
    )
    op.drop_table("outbox")
    op.drop_index("ix_audit_log_transaction", table_name="audit_log")
    op.drop_index("ix_audit_log_payment", table_name="audit_log")
    op.drop_table("audit_log")
