"""Entries lose their two foreign keys; the commit-time guard checks what they checked, once per
transfer (issue 13: the cost of a fee).

Each inserted entry ran two referential checks when its statement ended, one per foreign key
(`fk_entries_transfer_id_transfers`, `fk_entries_account_id_accounts`): a query each, through
the executor's SPI, an index probe and a KEY SHARE row lock each (on the hot revenue account's row
a lock written to its tuple by every group, since a sharded account's row is not otherwise locked
by a credit). A fee is a second leg, two more entries: four more queries per transfer. What they
guaranteed is kept, by checks that cost per transfer or only when a row is deleted:

  - an entry names an existing transfer: `wallet_check_transfer_balanced` (the deferred guard of
    0001/0004, which sums each transfer once at COMMIT) also probes the transfer's row, once per
    transfer in the same query (FOREIGN_KEY_VIOLATION when it is missing);
  - an entry names an existing account: the guard already read each entry's account for its unit
    check (a missing account failed it too); now it names the missing account
    (FOREIGN_KEY_VIOLATION) instead of a unit mismatch, and reads the accounts joined to the
    transfer's entries instead of by a subquery per entry (on a small accounts table, as on the
    bench's, the planner scanned the whole table for each entry; joined, once per transfer, and on
    a large one it still probes each entry's key);
  - a referenced row is never deleted or re-keyed: `transfers_keep_entries` refuses to delete (or
    change the id of) a transfer that has entries, as the foreign key's NO ACTION did (a refused
    posting's claim, which has none, is still given back), and `accounts_never_deleted` refuses
    to delete (or change the id of) any account: the ledger never removes one (entries, holds and
    shards name it for ever). Both fire only on a DELETE or an UPDATE of the id, which the hot
    path never makes.

Entries are written only by the transaction that claimed their transfer, after it claimed it, so
no other transaction can delete that transfer in between (it cannot see it), and an account can
be deleted by no transaction at all: the locks the foreign keys took protected nothing more.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0004's function with the transfer's row probed in the same query (`known`), the accounts joined,
# and a missing account told apart from an entry in another unit.
_CHECKED_PER_TRANSFER = """
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
BEGIN
    -- The memory: ',<entry id>,...,<entry id>,|<transfer id>' (ids are digits, so the first '|'
    -- ends them); plain expressions, which PL/pgSQL evaluates without running a query.
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

# 0004's function, as it was.
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
    checked := current_setting('wallet.balanced_entries', true);
    IF substr(checked, strpos(checked, '|') + 1) = NEW.transfer_id
       AND strpos(split_part(checked, '|', 1), ',' || NEW.id || ',') > 0 THEN
        RETURN NULL;
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

_KEEP_REFERENCED = [
    # A transfer with entries stays (the foreign key's NO ACTION); a claim without any, a refused
    # posting's, may be given back.
    """
    CREATE FUNCTION wallet_transfers_keep_entries() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM entries WHERE transfer_id = OLD.id) THEN
            RAISE EXCEPTION 'transfer % has entries: it is never deleted or re-keyed', OLD.id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END $$
    """,
    """
    CREATE TRIGGER transfers_keep_entries
        BEFORE DELETE OR UPDATE OF id ON transfers
        FOR EACH ROW EXECUTE FUNCTION wallet_transfers_keep_entries()
    """,
    # Accounts are never removed: entries (append-only), holds and shards name them for ever.
    """
    CREATE FUNCTION wallet_accounts_never_deleted() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'account % is never deleted or re-keyed', OLD.id
            USING ERRCODE = 'restrict_violation';
    END $$
    """,
    """
    CREATE TRIGGER accounts_never_deleted
        BEFORE DELETE OR UPDATE OF id ON accounts
        FOR EACH ROW EXECUTE FUNCTION wallet_accounts_never_deleted()
    """,
]


def upgrade() -> None:
    op.execute(_CHECKED_PER_TRANSFER)
    for statement in _KEEP_REFERENCED:
        op.execute(statement)
    op.drop_constraint("fk_entries_transfer_id_transfers", "entries", type_="foreignkey")
    op.drop_constraint("fk_entries_account_id_accounts", "entries", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        "fk_entries_account_id_accounts", "entries", "accounts", ["account_id"], ["id"]
    )
    op.create_foreign_key(
        "fk_entries_transfer_id_transfers", "entries", "transfers", ["transfer_id"], ["id"]
    )
    op.execute("DROP TRIGGER IF EXISTS accounts_never_deleted ON accounts")
    op.execute("DROP TRIGGER IF EXISTS transfers_keep_entries ON transfers")
    op.execute("DROP FUNCTION IF EXISTS wallet_accounts_never_deleted()")
    op.execute("DROP FUNCTION IF EXISTS wallet_transfers_keep_entries()")
    op.execute(_ONCE_PER_TRANSFER)
