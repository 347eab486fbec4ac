"""Credit (after 0019_credit): the overdue view's rollup, kept in the ledger's own transaction.

- `credit_due`: per member, each charge not yet repaid in full (first in, first out: repayments pay the
  charges due soonest, after refund reversals cancel their own charge), with its fixed due date and
  what is left of it. What is overdue at a moment T is the sum of the rows due before T, so the time
  part is computed at read time from the stored due dates and is never stale.
- `credit_rollup`: per member with credit entries, the latest entry's `created_at` (an answer "as of" a
  moment before it must read the ledger instead: the rollup is the state after every entry).
- `memberbot_credit_open_charges(members)`: the FIFO recomputation from the ledger (the rollup's one
  definition; the audit compares the tables with it).
- `memberbot_credit_rollup(members)`: the members' rows recomputed. A statement trigger on
  `credit_entry` calls it for the members an INSERT wrote to (one call per statement, so a COPY or a
  bulk insert is one set-based pass). Every ledger write takes the member's `credit_account` lock first
  (`memberbot_credit_post`), so each recomputation sees every earlier committed entry of the member.
- The backfill: every member with entries, once, at migration time.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

ROLLUP = r"""
CREATE TABLE IF NOT EXISTS credit_due (
    charge_id bigint PRIMARY KEY REFERENCES credit_entry (id) ON DELETE RESTRICT,
    merchant_id integer NOT NULL,
    member_id bigint NOT NULL,
    due_at timestamptz NOT NULL,
    remaining_fen bigint NOT NULL CHECK (remaining_fen > 0)
);
CREATE INDEX IF NOT EXISTS credit_due_merchant_due ON credit_due (merchant_id, due_at)
    INCLUDE (member_id, remaining_fen);
CREATE INDEX IF NOT EXISTS credit_due_member ON credit_due (member_id, due_at);
CREATE TABLE IF NOT EXISTS credit_rollup (
    member_id bigint PRIMARY KEY,
    merchant_id integer NOT NULL,
    last_entry_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS credit_rollup_merchant_last ON credit_rollup (merchant_id, last_entry_at);

-- What is left of each charge of the members, first in, first out (ordered by due date, then id): the
-- repayments R pay the charges in that order, so a charge whose running total is past R has
-- LEAST(net, running - R) left. Charges without a due date are never due and sort last.
CREATE OR REPLACE FUNCTION memberbot_credit_open_charges(p_members bigint[])
RETURNS TABLE (charge_id bigint, merchant_id integer, member_id bigint, due_at timestamptz,
               remaining_fen bigint)
LANGUAGE sql STABLE AS $$
WITH entries AS (
    SELECT e.* FROM unnest(p_members) AS m(id) JOIN credit_entry e ON e.member_id = m.id
), reversed AS (
    SELECT reverses_id, SUM(amount_fen) AS total FROM entries WHERE kind = 'reversal' GROUP BY reverses_id
), charges AS (
    SELECT c.merchant_id, c.member_id, c.id, c.due_at, c.amount_fen + COALESCE(r.total, 0) AS net
      FROM entries c LEFT JOIN reversed r ON r.reverses_id = c.id
     WHERE c.kind = 'charge'
), repaid AS (
    SELECT member_id, -SUM(amount_fen) AS total FROM entries WHERE kind = 'repay' GROUP BY member_id
), running AS (
    SELECT ch.*, COALESCE(rp.total, 0) AS repaid,
           SUM(ch.net) OVER (PARTITION BY ch.member_id ORDER BY ch.due_at, ch.id) AS running
      FROM charges ch LEFT JOIN repaid rp ON rp.member_id = ch.member_id
)
SELECT id, merchant_id, member_id, due_at, LEAST(net, running - repaid)
  FROM running
 WHERE running > repaid AND net > 0 AND due_at IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION memberbot_credit_rollup(p_members bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_rows integer;
BEGIN
    DELETE FROM credit_due d USING unnest(p_members) AS m(id) WHERE d.member_id = m.id;
    INSERT INTO credit_due (charge_id, merchant_id, member_id, due_at, remaining_fen)
    SELECT * FROM memberbot_credit_open_charges(p_members);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    INSERT INTO credit_rollup (member_id, merchant_id, last_entry_at)
    SELECT e.member_id, MIN(e.merchant_id), MAX(e.created_at)
      FROM unnest(p_members) AS m(id) JOIN credit_entry e ON e.member_id = m.id
     GROUP BY e.member_id
    ON CONFLICT (member_id) DO UPDATE SET last_entry_at = EXCLUDED.last_entry_at;
    RETURN v_rows;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_credit_rollup_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_members bigint[];
BEGIN
    SELECT array_agg(DISTINCT member_id ORDER BY member_id) INTO v_members FROM added;
    IF v_members IS NOT NULL THEN
        PERFORM memberbot_credit_rollup(v_members);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS credit_entry_rollup ON credit_entry;
CREATE TRIGGER credit_entry_rollup AFTER INSERT ON credit_entry
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION memberbot_credit_rollup_trigger();
"""

BACKFILL = r"""
SELECT memberbot_credit_rollup(ARRAY(SELECT DISTINCT member_id FROM credit_entry ORDER BY member_id));
ANALYZE credit_due;
ANALYZE credit_rollup;
"""

DROP = r"""
DROP TRIGGER IF EXISTS credit_entry_rollup ON credit_entry;
DROP FUNCTION IF EXISTS memberbot_credit_rollup_trigger();
DROP FUNCTION IF EXISTS memberbot_credit_rollup(bigint[]);
DROP FUNCTION IF EXISTS memberbot_credit_open_charges(bigint[]);
DROP TABLE IF EXISTS credit_rollup;
DROP TABLE IF EXISTS credit_due;
"""


async def create(apps: object, schema_editor: object) -> None:
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(ROLLUP)
    await client.execute_script(BACKFILL)


async def drop(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(DROP)  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [("models", "0024_analytics_cycle_index")]

    initial = False

    operations = [ops.RunPython(create, drop)]
