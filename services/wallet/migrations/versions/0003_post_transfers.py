"""`wallet_post_transfers(items jsonb)`: posts a batch of transfers in one round trip, each item as
the one-statement posting does (claim the id, lock and judge the account rows in id order, apply
rows, then shards, then entries), and a refused item changes nothing (its claim is deleted).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each item: {"id", "kind", "description", "metadata", "fingerprint",
#             "rows": [[account, posted, pending]...]  (distinct accounts),
#             "shards": [[account, shard, posted]...]  (distinct (account, shard)),
#             "entries": [[account, unit, amount]...]}.
# One result row per item, in order: status "posted" (with the new entry ids), "taken" (the id
# exists: nothing applied; the caller replays it) or "refused" (the accounts whose no-overdraft
# check failed; nothing applied, the claim deleted). Each statement of a PL/pgSQL function takes a
# new snapshot (READ COMMITTED), so the UPDATEs after the lock see the newest committed rows.
_FUNCTION = """
CREATE FUNCTION wallet_post_transfers(items jsonb)
RETURNS TABLE (n integer, status text, rejected text[], entry_ids bigint[], created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    k bigint;
    locked_count integer;
    refused text[];
    applied integer;
BEGIN
    FOR item, k IN SELECT value, ordinality FROM jsonb_array_elements(items) WITH ORDINALITY
    LOOP
        n := k;
        created_at := now();
        rejected := '{}';
        entry_ids := '{}';
        INSERT INTO transfers (id, kind, description, metadata, fingerprint)
        VALUES (item->>'id', item->>'kind', item->>'description', item->'metadata',
                item->'fingerprint')
        ON CONFLICT (id) DO NOTHING;
        IF NOT FOUND THEN
            status := 'taken';
            RETURN NEXT;
            CONTINUE;
        END IF;

        SELECT count(*), coalesce(array_agg(l.id::text ORDER BY l.id) FILTER (WHERE NOT l.fine), '{}')
          INTO locked_count, refused
          FROM (SELECT a.id,
                       (a.allow_negative OR a.shards > 0 OR c.posted - c.pending >= 0
                        OR a.posted + c.posted - (a.pending + c.pending) >= 0) AS fine
                  FROM accounts a
                  JOIN (SELECT (r->>0)::uuid AS account_id, (r->>1)::bigint AS posted,
                               (r->>2)::bigint AS pending
                          FROM jsonb_array_elements(item->'rows') AS r) c
                    ON c.account_id = a.id
                 ORDER BY a.id
                   FOR NO KEY UPDATE OF a) l;
        IF cardinality(refused) > 0 OR locked_count <> jsonb_array_length(item->'rows') THEN
            DELETE FROM transfers WHERE id = item->>'id';
            status := 'refused';
            rejected := refused;
            RETURN NEXT;
            CONTINUE;
        END IF;

        UPDATE accounts a
           SET posted = a.posted + c.posted, pending = a.pending + c.pending
          FROM (SELECT (r->>0)::uuid AS account_id, (r->>1)::bigint AS posted,
                       (r->>2)::bigint AS pending
                  FROM jsonb_array_elements(item->'rows') AS r) c
         WHERE a.id = c.account_id;

        PERFORM 1
           FROM account_shards s
           JOIN (SELECT (r->>0)::uuid AS account_id, (r->>1)::smallint AS shard
                   FROM jsonb_array_elements(item->'shards') AS r) c
             ON c.account_id = s.account_id AND c.shard = s.shard
          ORDER BY s.account_id, s.shard
            FOR NO KEY UPDATE OF s;
        UPDATE account_shards s
           SET posted = s.posted + c.posted
          FROM (SELECT (r->>0)::uuid AS account_id, (r->>1)::smallint AS shard,
                       (r->>2)::bigint AS posted
                  FROM jsonb_array_elements(item->'shards') AS r) c
         WHERE s.account_id = c.account_id AND s.shard = c.shard;
        GET DIAGNOSTICS applied = ROW_COUNT;
        IF applied <> jsonb_array_length(item->'shards') THEN
            RAISE EXCEPTION 'transfer %: a balance shard is missing', item->>'id';
        END IF;

        WITH written AS (
            INSERT INTO entries (transfer_id, account_id, unit, amount)
            SELECT item->>'id', (e->>0)::uuid, e->>1, (e->>2)::bigint
              FROM jsonb_array_elements(item->'entries') WITH ORDINALITY AS x(e, m)
             ORDER BY m
            RETURNING id
        )
        SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO entry_ids FROM written;
        status := 'posted';
        RETURN NEXT;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS wallet_post_transfers(jsonb)")
