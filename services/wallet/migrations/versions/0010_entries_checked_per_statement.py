"""The commit-time guard checks a statement's transfers in one query, not one query per transfer
(issue 13: grouped Transfer calls).

A group of 32 Transfer calls is one statement writing 32 transfers (64 entries); at COMMIT the
deferred `entries_balanced` fired 64 times and ran its check (entries by transfer, their accounts,
the transfer's row) once per transfer: 32 queries through SPI, each planned, started and ended,
with on a small accounts table a scan of the whole table each (the bench's), per group.

Now an AFTER INSERT trigger per statement (`entries_checked_per_statement`, with the statement's
rows as a transition table) checks every transfer the statement wrote entries for, in one query,
right after the statement, and remembers the ids of the entries of those that passed (all of each
such transfer's entries, the statement's and earlier ones) in a transaction-local setting,
`wallet.checked_entries`. At COMMIT each entry's deferred firing finds its id there and returns
without a query. A transfer that does not pass yet is not an error then: a transaction may write a
transfer's entries over several statements (the check belongs to COMMIT); its entries are not
remembered and their firings check it at COMMIT as before (0007's query and errors, unchanged).

Sound for the reasons 0004's memory is: an entry whose id was remembered was summed with its
transfer, and nothing can undo that check before COMMIT - entries are append-only, a transfer with
entries and an account are never deleted or re-keyed (0007), an account's unit never changes; an
entry added to the transfer later has an id outside the set and checks the transfer again. Each
statement's trigger replaces the memory (a statement's set, not the transaction's: a firing's
search stays as short as one statement's entries; the earlier statements' entries, if any, are
checked per transfer at COMMIT as before). The setting is transaction-local, so it ends with the
transaction and reverts with a rolled-back savepoint. With the session's replication role set to
replica neither trigger fires (as before for the deferred one).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One query over the statement's transfers: each transfer's entries (the statement's and earlier
# ones) with their accounts, grouped by transfer and unit; a transfer passes when it exists, every
# entry's account exists in the entry's unit and every unit sums to zero. The ids of the passing
# transfers' entries become the memory ('' when none passed).
_PER_STATEMENT = [
    """
    CREATE FUNCTION wallet_check_written_transfers() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM set_config('wallet.checked_entries', coalesce((
            WITH per_unit AS (
                SELECT e.transfer_id, sum(e.amount) AS total,
                       bool_and(a.unit IS NOT DISTINCT FROM e.unit) AS units_ok,
                       string_agg(CAST(e.id AS text), ',') AS ids
                  FROM entries e LEFT JOIN accounts a ON a.id = e.account_id
                 WHERE e.transfer_id IN (SELECT w.transfer_id FROM written w)
                 GROUP BY e.transfer_id, e.unit
            ), passed AS (
                SELECT transfer_id, string_agg(ids, ',') AS ids
                  FROM per_unit
                 GROUP BY transfer_id
                HAVING bool_and(total = 0 AND units_ok)
            )
            SELECT ',' || string_agg(p.ids, ',') || ','
              FROM passed p
             WHERE EXISTS (SELECT 1 FROM transfers t WHERE t.id = p.transfer_id)
        ), ''), true);
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER entries_checked_per_statement
        AFTER INSERT ON entries
        REFERENCING NEW TABLE AS written
        FOR EACH STATEMENT EXECUTE FUNCTION wallet_check_written_transfers()
    """,
]

# 0007's deferred check, first looking its entry up in the statement's memory. {skip}: the lookup
# (empty in the downgrade: 0007's function, as it was).
_CHECK_AT_COMMIT = """
CREATE OR REPLACE FUNCTION wallet_check_transfer_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    checked text;
    covered text;
    known boolean;
    bad_entry bigint;
    bad_unit text;
    bad_sum numeric;
    bad record;
BEGIN{skip}
    checked := current_setting('wallet.balanced_entries', true);
    IF substr(checked, strpos(checked, '|') + 1) = NEW.transfer_id
       AND strpos(split_part(checked, '|', 1), ',' || NEW.id || ',') > 0 THEN
        RETURN NULL;  -- this entry was checked with its transfer by an earlier firing
    END IF;
    SELECT ',' || string_agg(u.ids, ',') || ',',
           EXISTS (SELECT 1 FROM transfers t WHERE t.id = NEW.transfer_id),
           min(u.bad_entry),
           (array_agg(u.unit) FILTER (WHERE u.total <> 0))[1],
           (array_agg(u.total) FILTER (WHERE u.total <> 0))[1]
      INTO covered, known, bad_entry, bad_unit, bad_sum
      FROM (SELECT e.unit, sum(e.amount) AS total,
                   string_agg(CAST(e.id AS text), ',') AS ids,
                   min(e.id) FILTER (WHERE a.unit IS DISTINCT FROM e.unit) AS bad_entry
              FROM entries e LEFT JOIN accounts a ON a.id = e.account_id
             WHERE e.transfer_id = NEW.transfer_id
             GROUP BY e.unit) u;
    IF NOT known THEN
        RAISE EXCEPTION 'entry % names transfer %, which does not exist', NEW.id, NEW.transfer_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF bad_entry IS NOT NULL THEN
        SELECT e.id, e.unit, e.account_id, a.id IS NOT NULL AS account_exists INTO bad
          FROM entries e LEFT JOIN accounts a ON a.id = e.account_id
         WHERE e.id = bad_entry;
        IF NOT bad.account_exists THEN
            RAISE EXCEPTION 'entry % names account %, which does not exist',
                bad.id, bad.account_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RAISE EXCEPTION 'entry % is in %, not in the unit of account %',
            bad.id, bad.unit, bad.account_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF bad_unit IS NOT NULL THEN
        RAISE EXCEPTION 'transfer % does not balance: % % left over',
            NEW.transfer_id, bad_sum, bad_unit
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM set_config('wallet.balanced_entries', covered || '|' || NEW.transfer_id, true);
    RETURN NULL;
END $$
"""
# Checked with every transfer of its statement (plain expressions: no query).
_SKIP_CHECKED = """
    IF strpos(current_setting('wallet.checked_entries', true), ',' || NEW.id || ',') > 0 THEN
        RETURN NULL;
    END IF;"""


def upgrade() -> None:
    for statement in _PER_STATEMENT:
        op.execute(statement)
    op.execute(_CHECK_AT_COMMIT.replace("{skip}", _SKIP_CHECKED))


def downgrade() -> None:
    op.execute(_CHECK_AT_COMMIT.replace("{skip}", ""))
    op.execute("DROP TRIGGER IF EXISTS entries_checked_per_statement ON entries")
    op.execute("DROP FUNCTION IF EXISTS wallet_check_written_transfers()")
