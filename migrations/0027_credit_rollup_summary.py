"""Credit (after 0026_analytics_rebuild_batches): each member's open charges summed in `credit_rollup`.

- `credit_rollup.open_fen`, `first_due_at`, `last_due_at`: what is left of the member's open charges
  (`credit_due`) and their earliest and latest due dates (NULL: none). A member whose latest open
  charge is due before the moment asked is overdue by all of `open_fen` since `first_due_at`: the
  overdue list reads that one row instead of every open charge (`credit_due` is summed only for the
  members with charges due on both sides of the moment).
- `memberbot_credit_rollup(members)` keeps them with the rest, in the same statement trigger.
- The backfill: every rollup row from `credit_due`.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

SUMMARY = r"""
ALTER TABLE credit_rollup ADD COLUMN IF NOT EXISTS open_fen bigint NOT NULL DEFAULT 0;
ALTER TABLE credit_rollup ADD COLUMN IF NOT EXISTS first_due_at timestamptz;
ALTER TABLE credit_rollup ADD COLUMN IF NOT EXISTS last_due_at timestamptz;
CREATE INDEX IF NOT EXISTS credit_rollup_merchant_due ON credit_rollup (merchant_id, first_due_at)
    INCLUDE (last_due_at, last_entry_at, open_fen) WHERE first_due_at IS NOT NULL;

CREATE OR REPLACE FUNCTION memberbot_credit_rollup(p_members bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_rows integer;
BEGIN
    DELETE FROM credit_due d USING unnest(p_members) AS m(id) WHERE d.member_id = m.id;
    INSERT INTO credit_due (charge_id, merchant_id, member_id, due_at, remaining_fen)
    SELECT * FROM memberbot_credit_open_charges(p_members);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    INSERT INTO credit_rollup (member_id, merchant_id, last_entry_at, open_fen, first_due_at, last_due_at)
    SELECT e.member_id, e.merchant_id, e.last_at, COALESCE(d.open_fen, 0), d.first_due_at, d.last_due_at
      FROM (SELECT x.member_id, MIN(x.merchant_id) AS merchant_id, MAX(x.created_at) AS last_at
              FROM unnest(p_members) AS m(id) JOIN credit_entry x ON x.member_id = m.id
             GROUP BY x.member_id) e
      LEFT JOIN (SELECT y.member_id, SUM(y.remaining_fen) AS open_fen, MIN(y.due_at) AS first_due_at,
                        MAX(y.due_at) AS last_due_at
                   FROM unnest(p_members) AS m(id) JOIN credit_due y ON y.member_id = m.id
                  GROUP BY y.member_id) d ON d.member_id = e.member_id
    ON CONFLICT (member_id) DO UPDATE
       SET last_entry_at = EXCLUDED.last_entry_at, open_fen = EXCLUDED.open_fen,
           first_due_at = EXCLUDED.first_due_at, last_due_at = EXCLUDED.last_due_at;
    RETURN v_rows;
END
$$;
"""

BACKFILL = r"""
UPDATE credit_rollup r SET open_fen = d.open_fen, first_due_at = d.first_due_at, last_due_at = d.last_due_at
  FROM (SELECT member_id, SUM(remaining_fen) AS open_fen, MIN(due_at) AS first_due_at, MAX(due_at) AS last_due_at
          FROM credit_due GROUP BY member_id) d
 WHERE d.member_id = r.member_id;
ANALYZE credit_rollup;
"""

# 0025's function, which does not know the new columns.
PREVIOUS = r"""
DROP INDEX IF EXISTS credit_rollup_merchant_due;
ALTER TABLE credit_rollup DROP COLUMN IF EXISTS open_fen, DROP COLUMN IF EXISTS first_due_at,
    DROP COLUMN IF EXISTS last_due_at;
"""


async def create(apps: object, schema_editor: object) -> None:
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(SUMMARY)
    await client.execute_script(BACKFILL)


async def drop(apps: object, schema_editor: object) -> None:
    import importlib

    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(PREVIOUS)
    await client.execute_script(importlib.import_module("migrations.0025_credit_rollup").ROLLUP)


class Migration(migrations.Migration):
    dependencies = [("models", "0026_analytics_rebuild_batches")]

    initial = False

    operations = [ops.RunPython(create, drop)]
