"""The platform's TCC barrier table: fingerprints become per-field digests in JSONB, created_at
defaults to now(), op and origin are checked. Stored request fingerprints (barrier rows, payments,
subscription transactions) are rewritten from raw field values to the platform's digests, so a
replay of a request made before the upgrade still matches.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 13:00:00
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from hirepay_platform.fingerprint import encode, fingerprint

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _digests(raw: str) -> str:
    """The platform fingerprint (as text) of a fingerprint 0001 stored: JSON of raw field values.
    An empty or unreadable one becomes the empty fingerprint (it matched no request before either)."""
    try:
        fields: Any = json.loads(raw or "{}")
    except ValueError:
        fields = {}
    return encode(fingerprint(fields if isinstance(fields, dict) else {}))


def upgrade() -> None:
    bind = op.get_bind()
    barriers = bind.execute(
        sa.text(
            "SELECT global_tx_id, branch_id, op, fingerprint FROM tcc_barriers"
            " WHERE fingerprint <> ''"
        )
    ).all()
    for row in barriers:
        bind.execute(
            sa.text(
                "UPDATE tcc_barriers SET fingerprint = :fp"
                " WHERE global_tx_id = :g AND branch_id = :b AND op = :op"
            ),
            {
                "fp": _digests(row.fingerprint),
                "g": row.global_tx_id,
                "b": row.branch_id,
                "op": row.op,
            },
        )
    op.execute("ALTER TABLE tcc_barriers ALTER COLUMN fingerprint DROP DEFAULT")
    op.execute(
        "ALTER TABLE tcc_barriers ALTER COLUMN fingerprint TYPE JSONB"
        " USING (CASE WHEN fingerprint = '' THEN '{}' ELSE fingerprint END)::jsonb"
    )
    op.execute("ALTER TABLE tcc_barriers ALTER COLUMN fingerprint SET DEFAULT '{}'")
    op.execute("ALTER TABLE tcc_barriers ALTER COLUMN created_at SET DEFAULT now()")
    op.create_check_constraint(
        "ck_tcc_barriers_op", "tcc_barriers", "op IN ('try', 'confirm', 'cancel')"
    )
    op.create_check_constraint(
        "ck_tcc_barriers_origin", "tcc_barriers", "origin IN ('try', 'confirm', 'cancel')"
    )

    # payments.fingerprint stays text: the encoded platform fingerprint of the Authorize.
    for row in bind.execute(
        sa.text("SELECT id, fingerprint FROM payments WHERE fingerprint <> ''")
    ).all():
        bind.execute(
            sa.text("UPDATE payments SET fingerprint = :fp WHERE id = :id"),
            {"fp": _digests(row.fingerprint), "id": row.id},
        )
    # A Subscribe's fingerprint lives in the transaction's metadata (never published).
    for row in bind.execute(
        sa.text(
            "SELECT id, metadata->>'fingerprint' AS fp FROM transactions"
            " WHERE metadata->>'fingerprint' IS NOT NULL"
        )
    ).all():
        bind.execute(
            sa.text(
                "UPDATE transactions SET metadata = jsonb_set(metadata, '{fingerprint}',"
                " to_jsonb(CAST(:fp AS text))) WHERE id = :id"
            ),
            {"fp": _digests(row.fp), "id": row.id},
        )


def downgrade() -> None:
    # The digests cannot be turned back into field values: after a downgrade, a replay of a
    # request fingerprinted by 0002 is refused as IDEMPOTENCY_MISMATCH instead of answered.
    op.drop_constraint("ck_tcc_barriers_origin", "tcc_barriers", type_="check")
    op.drop_constraint("ck_tcc_barriers_op", "tcc_barriers", type_="check")
    op.execute("ALTER TABLE tcc_barriers ALTER COLUMN created_at DROP DEFAULT")
    op.execute("ALTER TABLE tcc_barriers ALTER COLUMN fingerprint DROP DEFAULT")
    op.execute(
        "ALTER TABLE tcc_barriers ALTER COLUMN fingerprint TYPE TEXT"
        " USING (CASE WHEN fingerprint = '{}'::jsonb THEN '' ELSE fingerprint::text END)"
    )
    op.execute("ALTER TABLE tcc_barriers ALTER COLUMN fingerprint SET DEFAULT ''")
