"""The ledger's SQL statements: the one-statement posting and the batch claim/apply pair.

Each statement's text does not depend on the number of legs or items (array parameters), so
asyncpg's prepared-statement cache serves every call.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text

from hirepay_platform.sql_lists import listed, quoted


def _change_shards(after: str) -> str:
    """The CTEs `shard_locked` (every shard of `shard_change`, locked in (account, shard) order,
    only once `after` - an SQL condition - was evaluated, with its change) and `shards_changed`
    (each changed). `shard_change` is read once, so PostgreSQL folds it into the lock's query
    instead of materialising it: fewer plan nodes per execution (issue 13)."""
    return f"""
    ), shard_locked AS MATERIALIZED (
        SELECT s.account_id, s.shard, c.posted FROM account_shards s
          JOIN shard_change c ON c.account_id = s.account_id AND c.shard = s.shard
         WHERE {after}
         ORDER BY s.account_id, s.shard
           FOR NO KEY UPDATE OF s
    ), shards_changed AS (
        UPDATE account_shards s
           SET posted = s.posted + l.posted
          FROM shard_locked l
         WHERE s.account_id = l.account_id AND s.shard = l.shard
        RETURNING 1
    """


# Applies a whole posting in one round trip, in a fixed lock order (account rows by id, then shard
# rows by (account, shard)) so that concurrent postings cannot deadlock:
#  0. with :claim, insert the transfer first (ON CONFLICT DO NOTHING waits for an in-flight twin);
#     if the id is taken, `go` is false and nothing below happens;
#  1. lock the account rows to change, ascending id (a MATERIALIZED CTE with ORDER BY ... FOR
#     UPDATE locks in that order), and judge each on the row version the lock returns (in READ
#     COMMITTED a locking read sees the newest committed version): the change may apply if the
#     account may go negative, is sharded (checked by the caller under the lock), does not lose
#     availability, or keeps posted - pending >= 0;
#  2. only if every row change may apply, apply them all (the UPDATE keeps the same condition as a
#     guard); a refused posting therefore changes no balance, so a batch can go on after it with
#     nothing to undo but its claimed transfer row (see release_claim);
#  3. only if every row change applied (the scalar subquery reads all of step 2 first, so shard
#     locks are always taken after row locks): lock and change the shards, and write the entries;
#  4. report whether the id was claimed, the refused accounts (then the caller rolls back or
#     releases the claim) and the new entry ids.
POST = text(
    """
    WITH claimed AS (
        INSERT INTO transfers (id, kind, description, metadata, fingerprint)
        SELECT CAST(:transfer_id AS text), CAST(:kind AS text), CAST(:description AS text),
               CAST(:metadata AS jsonb), CAST(:fingerprint AS jsonb)
         WHERE CAST(:claim AS boolean)
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), go AS (
        SELECT NOT CAST(:claim AS boolean) OR EXISTS (SELECT 1 FROM claimed) AS ok
    ), row_change AS (
        SELECT * FROM unnest(
            CAST(:row_ids AS uuid[]), CAST(:row_posted AS bigint[]), CAST(:row_pending AS bigint[])
        ) AS c(account_id, posted, pending)
    ), locked AS MATERIALIZED (
        SELECT a.id,
               (a.allow_negative OR a.shards > 0 OR c.posted - c.pending >= 0
                OR a.posted + c.posted - (a.pending + c.pending) >= 0) AS fine
          FROM accounts a JOIN row_change c ON c.account_id = a.id
         WHERE (SELECT ok FROM go)
         ORDER BY a.id
           FOR NO KEY UPDATE OF a
    ), judged AS (
        SELECT (SELECT ok FROM go)
               AND count(*) FILTER (WHERE fine) = cardinality(CAST(:row_ids AS uuid[])) AS ok
          FROM locked
    ), changed AS (
        UPDATE accounts a
           SET posted = a.posted + c.posted, pending = a.pending + c.pending
          FROM locked l JOIN row_change c ON c.account_id = l.id
         WHERE a.id = l.id AND (SELECT ok FROM judged)
           AND (a.allow_negative OR a.shards > 0 OR c.posted - c.pending >= 0
                OR a.posted + c.posted - (a.pending + c.pending) >= 0)
        RETURNING a.id
    ), verdict AS (
        SELECT (SELECT ok FROM judged) AND count(*) = cardinality(CAST(:row_ids AS uuid[])) AS ok
          FROM changed
    ), shard_change AS (
        SELECT * FROM unnest(
            CAST(:shard_ids AS uuid[]), CAST(:shard_nos AS smallint[]),
            CAST(:shard_posted AS bigint[])
        ) AS c(account_id, shard, posted)
    """
    + _change_shards("(SELECT ok FROM verdict)")
    + """
    ), written AS (
        INSERT INTO entries (transfer_id, account_id, unit, amount)
        SELECT CAST(:transfer_id AS text), e.account_id, e.unit, e.amount
          FROM unnest(
                CAST(:entry_accounts AS uuid[]), CAST(:entry_units AS text[]),
                CAST(:entry_amounts AS bigint[])
               ) WITH ORDINALITY AS e(account_id, unit, amount, n)
         WHERE (SELECT ok FROM verdict)
         ORDER BY e.n
        RETURNING id
    )
    SELECT (SELECT ok FROM go) AS claimed,
           (SELECT ok FROM verdict) AS ok,
           ARRAY(SELECT CAST(c.account_id AS text) FROM row_change c
                  WHERE c.account_id NOT IN (SELECT id FROM locked WHERE fine)
                  ORDER BY c.account_id) AS rejected,
           ARRAY(SELECT id FROM written ORDER BY id) AS entry_ids,
           (SELECT count(*) FROM shards_changed) AS shards_changed,
           now() AS created_at
    """
)


# A batch ("run") of postings in two set-based round trips, each account row changed once: claim
# every id (ON CONFLICT DO NOTHING waits for an in-flight twin) and lock every account row in id
# order, reading it after the lock (a locking read sees the newest committed version); then - after
# the no-overdraft rule was applied to each posting in order, in Python, on the balances read under
# the locks - give back the refused ids and apply the accepted postings' net changes.
CLAIM_AND_LOCK = text(
    f"""
    WITH claimed AS (
        INSERT INTO transfers (id, kind, description, metadata, fingerprint)
        SELECT * FROM unnest(
            {listed("ids", "text")}, {listed("kinds", "text")}, {quoted("descriptions", "text")},
            {quoted("metadata", "jsonb")}, {quoted("fingerprints", "jsonb")})
            AS i(id, kind, description, metadata, fingerprint)
         ORDER BY id
        ON CONFLICT (id) DO NOTHING
        RETURNING id, created_at
    ), locked AS MATERIALIZED (
        SELECT CAST(id AS text) AS id, posted, pending, allow_negative, shards
          FROM accounts WHERE id = ANY({listed("account_ids", "uuid")})
         ORDER BY id
           FOR NO KEY UPDATE
    )
    SELECT ARRAY(SELECT id FROM claimed) AS claimed,
           coalesce((SELECT min(created_at) FROM claimed), now()) AS created_at,
           ARRAY(SELECT id FROM locked ORDER BY id) AS account_ids,
           ARRAY(SELECT posted FROM locked ORDER BY id) AS posted,
           ARRAY(SELECT pending FROM locked ORDER BY id) AS pending,
           ARRAY(SELECT allow_negative FROM locked ORDER BY id) AS allow_negative,
           ARRAY(SELECT shards > 0 FROM locked ORDER BY id) AS sharded
    """
)
# The first statement of a checked batch of transfers (a repeated id or a guarded debit splits it
# into runs, each claiming its ids and changing its shards in turn): every account row of the
# batch locked (id order), then every id claimed (id order), then every shard the batch may change
# locked ((account, shard) order) - the one order, taken before any run. Run by run, a later run's
# claims and the shards only it changes were taken after an earlier run's shards, and a twin of a
# later transfer (its claim, then the shard) or another batch on the same two shards (1 in 16, a
# batch picks one shard per sharded account) held one and waited for the other: a deadlock
# (`test_wallet_checked_runs_lock_order_wal11c_pg.py`, issue 13). The runs then post the ids
# claimed here without claiming them again.
CLAIM_AHEAD = text(
    f"""
    WITH locked AS MATERIALIZED (
        SELECT id FROM accounts WHERE id = ANY({listed("account_ids", "uuid")})
         ORDER BY id
           FOR NO KEY UPDATE
    ), claimed AS (
        INSERT INTO transfers (id, kind, description, metadata, fingerprint)
        SELECT * FROM unnest(
            {listed("ids", "text")}, {listed("kinds", "text")}, {quoted("descriptions", "text")},
            {quoted("metadata", "jsonb")}, {quoted("fingerprints", "jsonb")})
            AS i(id, kind, description, metadata, fingerprint)
         WHERE (SELECT count(*) FROM locked) >= 0
         ORDER BY id
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), shard_locked AS MATERIALIZED (
        SELECT 1 FROM account_shards s
          JOIN unnest({listed("shard_ids", "uuid")}, {listed("shard_nos", "smallint")})
               AS k(account_id, shard)
            ON k.account_id = s.account_id AND k.shard = s.shard
         WHERE (SELECT count(*) FROM claimed) >= 0
         ORDER BY s.account_id, s.shard
           FOR NO KEY UPDATE OF s
    )
    SELECT ARRAY(SELECT id FROM claimed) AS claimed, (SELECT count(*) FROM shard_locked) AS shards
    """
)
APPLY_MANY = text(
    """
    WITH released AS (
        DELETE FROM transfers WHERE id = ANY(CAST(:released AS text[])) RETURNING 1
    ), row_changed AS (
        UPDATE accounts a
           SET posted = a.posted + c.posted, pending = a.pending + c.pending
          FROM unnest(CAST(:row_ids AS uuid[]), CAST(:row_posted AS bigint[]),
                      CAST(:row_pending AS bigint[])) AS c(account_id, posted, pending)
         WHERE a.id = c.account_id
        RETURNING 1
    ), shard_change AS (
        SELECT * FROM unnest(
            CAST(:shard_ids AS uuid[]), CAST(:shard_nos AS smallint[]),
            CAST(:shard_posted AS bigint[])
        ) AS c(account_id, shard, posted)
    """
    + _change_shards("true")
    + """
    ), written AS (
        INSERT INTO entries (transfer_id, account_id, unit, amount)
        SELECT e.transfer_id, e.account_id, e.unit, e.amount
          FROM unnest(
                CAST(:entry_transfers AS text[]), CAST(:entry_accounts AS uuid[]),
                CAST(:entry_units AS text[]), CAST(:entry_amounts AS bigint[])
               ) WITH ORDINALITY AS e(transfer_id, account_id, unit, amount, n)
         ORDER BY e.n
        RETURNING id
    )
    SELECT (SELECT count(*) FROM released) AS released,
           (SELECT count(*) FROM row_changed) AS rows_changed,
           (SELECT count(*) FROM shards_changed) AS shards_changed,
           ARRAY(SELECT id FROM written ORDER BY id) AS entry_ids
    """
)

# A locking read returns the newest committed version of each row, so an unsharded account's
# balance is read with its lock, in the same round trip.
LOCK_ACCOUNTS = text(
    """
    SELECT CAST(id AS text) AS id, posted, pending, shards > 0 AS sharded
      FROM accounts WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR NO KEY UPDATE
    """
)
# Shard rows locked ahead of the postings that will change them, in the order every posting
# locks them ((account, shard), after its account rows): a group of holds whose later statement
# would change a shard its earlier ones did not (the fee of a Confirm repeated in a later round)
# takes them with its account rows up front (issue 13).
LOCK_SHARDS = text(
    """
    SELECT 1 FROM account_shards s
      JOIN unnest(CAST(:ids AS uuid[]), CAST(:shards AS smallint[])) AS k(account_id, shard)
        ON k.account_id = s.account_id AND k.shard = s.shard
     ORDER BY s.account_id, s.shard
       FOR NO KEY UPDATE OF s
    """
)
# A sharded account's shards are read by a separate statement after the lock, so its snapshot
# includes every debit committed before it.
READ_BALANCES = text(
    """
    SELECT CAST(a.id AS text) AS id, a.pending,
           a.posted + coalesce((SELECT sum(s.posted) FROM account_shards s
                                 WHERE s.account_id = a.id), 0) AS posted
      FROM accounts a
     WHERE a.id = ANY(CAST(:ids AS uuid[]))
    """
)


# A run that changes no shard (no posting of it credits or debits a sharded account: the common
# case of plain transfers and holds) has no shard CTEs at all: PostgreSQL plans and initialises
# every node of a statement on each execution whatever its rows, and without those nodes a lone
# transfer costs the server 12% fewer instructions, a Reserve + Confirm 7% (callgrind, issue 13).
# `shards_changed` stays, empty, so that the statement's result has its columns.
_SHARD_RUN = (
    f"""
    ), shard_change AS (
        SELECT c.account_id, c.shard, CAST(sum(c.posted) AS bigint) AS posted
          FROM unnest(
                {listed("shard_items", "bigint")}, {listed("shard_ids", "uuid")},
                {listed("shard_nos", "smallint")}, {listed("shard_posted", "bigint")}
               ) AS c(n, account_id, shard, posted)
          JOIN live ON live.n = c.n
         GROUP BY c.account_id, c.shard
    """
    # Shard locks are taken after the row changes (their count is read first).
    + _change_shards("(SELECT count(*) FROM rows_changed) >= 0")
)
_NO_SHARDS = """
    ), shards_changed AS (
        SELECT 1 WHERE false
    """


# A batch ("run") of postings as ONE statement, for the common case that no posting of it can be
# refused; run by execute_alone it is a transaction of its own (no BEGIN, no COMMIT round trip),
# or it is one statement of the unit of work's transaction:
#  1. lock every account row of the run, ascending id, reading it after the lock (the newest
#     committed version);
#  2. judge every row change on a floor of its account's balance: the balance read under the lock
#     plus every debit (availability lost) of the run up to and including this posting, credits of
#     earlier postings not counted. A change passing on this floor passes whichever of the run's
#     postings are applied (some ids may turn out taken), so the verdict needs no claim yet;
#  3. only if every change passes, claim every id (ON CONFLICT DO NOTHING waits for an in-flight
#     twin) and apply the claimed postings: each account row once (net change), then lock and
#     change each shard once (ascending), then write the entries in order. Otherwise nothing at
#     all is written, and the caller runs the batch checked, posting by posting (CLAIM_AND_LOCK,
#     APPLY_MANY).
# Ids are claimed in id order, as CLAIM_AND_LOCK claims them: claimed in the items' order, two runs
# with two of the same ids listed the other way round (retries racing their first attempts), on
# sharded accounts only (no account row locked first), each claimed one and waited for the
# other's: a deadlock (issue 13).
# Locks are taken in one order (rows by id, claims, shards by key); a twin in flight on another
# path (claim first, then rows) can deadlock with it: PostgreSQL aborts one, whose batch is run
# again (nothing of it was written).
def post_run_ctes(
    *, after: str = "true", gate: str = "true", shards: bool = True, skip_taken: bool = True
) -> str:
    """POST_RUN's common table expressions (item ... written, see POST_RUN), for a statement of
    which the run is one part: its account rows are locked only once `after` (an SQL condition)
    was evaluated, and it applies only if `gate` (another) holds too. Without `shards`, for a run
    whose `shard_*` parameters are empty: the same statement less its shard changes. Without
    `skip_taken`, an id taken already fails the statement (pk_transfers) instead of leaving its
    transfer out, for a statement whose caller then takes another path: no speculative
    insertion (its key probed before the insert, a WAL record to confirm it; issue 13)."""
    conflicts = "ON CONFLICT (id) DO NOTHING" if skip_taken else ""
    return (
        f"""
    item AS (
        SELECT * FROM unnest(
            {listed("ids", "text")}, {listed("kinds", "text")}, {quoted("descriptions", "text")},
            {quoted("metadata", "jsonb")}, {quoted("fingerprints", "jsonb")}
        ) WITH ORDINALITY AS i(id, kind, description, metadata, fingerprint, n)
    ), row_change AS (
        SELECT * FROM unnest(
            {listed("row_items", "bigint")}, {listed("row_ids", "uuid")},
            {listed("row_posted", "bigint")}, {listed("row_pending", "bigint")}
        ) AS c(n, account_id, posted, pending)
    ), locked AS MATERIALIZED (
        SELECT id, posted - pending AS available, allow_negative OR shards > 0 AS unguarded
          FROM accounts WHERE id = ANY({listed("account_ids", "uuid")}) AND {after}
         ORDER BY id
           FOR NO KEY UPDATE
    ), floor AS (
        SELECT c.account_id, c.posted - c.pending AS available,
               sum(least(c.posted - c.pending, 0))
                   OVER (PARTITION BY c.account_id ORDER BY c.n) AS debits
          FROM row_change c
    ), verdict AS (
        SELECT {gate} AND coalesce(bool_and(l.id IS NOT NULL AND (
                   l.unguarded OR f.available >= 0 OR l.available + f.debits >= 0)), true) AS ok
          FROM floor f LEFT JOIN locked l ON l.id = f.account_id
    ), claimed AS (
        INSERT INTO transfers (id, kind, description, metadata, fingerprint)
        SELECT id, kind, description, metadata, fingerprint FROM item
         WHERE (SELECT ok FROM verdict)
         ORDER BY id
        {conflicts}
        RETURNING id, created_at
    ), live AS (
        SELECT item.n FROM item JOIN claimed ON claimed.id = item.id
    ), rows_changed AS (
        UPDATE accounts a
           SET posted = a.posted + s.posted, pending = a.pending + s.pending
          FROM (SELECT c.account_id, CAST(sum(c.posted) AS bigint) AS posted,
                       CAST(sum(c.pending) AS bigint) AS pending
                  FROM row_change c JOIN live ON live.n = c.n
                 GROUP BY c.account_id) s
         WHERE a.id = s.account_id
        RETURNING 1
    """
        + (_SHARD_RUN if shards else _NO_SHARDS)
        + f"""
    ), written AS (
        INSERT INTO entries (transfer_id, account_id, unit, amount)
        SELECT item.id, e.account_id, e.unit, e.amount
          FROM unnest(
                {listed("entry_items", "bigint")}, {listed("entry_accounts", "uuid")},
                {listed("entry_units", "text")}, {listed("entry_amounts", "bigint")}
               ) WITH ORDINALITY AS e(n, account_id, unit, amount, k)
          JOIN live ON live.n = e.n
          JOIN item ON item.n = e.n
         ORDER BY e.k
        RETURNING id
    )
    """
    )


def _post_run_statement(*, shards: bool) -> TextClause:
    return text(
        "WITH"
        + post_run_ctes(shards=shards)
        + """
    SELECT (SELECT ok FROM verdict) AS ok,
           ARRAY(SELECT id FROM claimed) AS claimed,
           (SELECT min(created_at) FROM claimed) AS created_at,
           (SELECT count(*) FROM rows_changed) AS rows_changed,
           (SELECT count(*) FROM shards_changed) AS shards_changed,
           ARRAY(SELECT id FROM written ORDER BY id) AS entry_ids
    """
    )


POST_RUN = _post_run_statement(shards=True)
POST_RUN_NO_SHARDS = _post_run_statement(shards=False)
