"""The ledger's commit-time guard checks each transfer once, not once per entry (issue 13).

`entries_balanced` stays a deferred constraint trigger fired for every inserted entry at COMMIT,
with the same two checks and messages (the entry's unit is its account's; its transfer sums to zero
per unit), but its function now checks the whole transfer in one query - every entry's unit
against its account's and every unit's sum - and remembers, for the rest of the transaction, that
transfer and the ids of the entries that query covered. The firings for the transfer's other
entries (deferred events fire in insertion order, so they follow at once) find their entry among
those ids and return without a query. Before, each of a transfer's k entries ran two queries, the
second summing all k entries: 2k queries and k*k entry reads, so a second leg (a fee) made the
guard cost of a transfer 3.3 times as much; now one query of k entry reads per transfer.

Sound because entries are append-only (entries_append_only): an entry whose id was in a checked
set is a row that was summed, and an entry inserted later (by another statement, after a SET
CONSTRAINTS ... IMMEDIATE, in interleaved transfers) has an id outside the set and checks its
transfer again. The memory is a transaction-local setting, so it ends with the transaction (and
reverts with a rolled-back savepoint, to a set whose rows still exist).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONCE_PER_TRANSFER = """
CREATE OR REPLACE FUNCTION wallet_check_transfer_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    checked text;
    covered text;
    bad_entry bigint;
    bad_unit text;
    bad_sum numeric;
    bad record;
BEGIN
    -- The memory: ',<entry id>,...,<entry id>,|<transfer id>' (ids are digits, so the first '|'
    -- ends them); plain expressions, which PL/pgSQL evaluates without running a query.
    checked := current_setting('wallet.balanced_entries', true);
    IF substr(checked, strpos(checked, '|') + 1) = NEW.transfer_id
       AND strpos(split_part(checked, '|', 1), ',' || NEW.id || ',') > 0 THEN
        RETURN NULL;  -- this entry was summed with its transfer by an earlier firing
    END IF;
    SELECT ',' || string_agg(u.ids, ',') || ',',
           min(u.bad_entry),
           (array_agg(u.unit) FILTER (WHERE u.total <> 0))[1],
           (array_agg(u.total) FILTER (WHERE u.total <> 0))[1]
      INTO covered, bad_entry, bad_unit, bad_sum
      FROM (SELECT e.unit, sum(e.amount) AS total,
                   string_agg(CAST(e.id AS text), ',') AS ids,
                   min(e.id) FILTER (WHERE e.unit IS DISTINCT FROM (
                       SELECT a.unit FROM accounts a WHERE a.id = e.account_id)) AS bad_entry
              FROM entries e
             WHERE e.transfer_id = NEW.transfer_id
             GROUP BY e.unit) u;
    IF bad_entry IS NOT NULL THEN
        SELECT id, unit, account_id INTO bad FROM entries WHERE id = bad_entry;
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

# The function as 0001 made it: two queries per entry, the second summing the whole transfer.
_ONCE_PER_ENTRY = """
CREATE OR REPLACE FUNCTION wallet_check_transfer_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad_unit text;
    bad_sum numeric;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM accounts WHERE id = NEW.account_id AND unit = NEW.unit
    ) THEN
        RAISE EXCEPTION 'entry % is in %, not in the unit of account %',
            NEW.id, NEW.unit, NEW.account_id
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT unit, sum(amount) INTO bad_unit, bad_sum
      FROM entries
     WHERE transfer_id = NEW.transfer_id
     GROUP BY unit
    HAVING sum(amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'transfer % does not balance: % % left over',
            NEW.transfer_id, bad_sum, bad_unit
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.execute(_ONCE_PER_TRANSFER)


def downgrade() -> None:
    op.execute(_ONCE_PER_ENTRY)
