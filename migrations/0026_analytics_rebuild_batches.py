"""Analytics (after 0025_credit_rollup): the rollup rebuild in batches, each its own transaction,
resumable and idempotent (`memberbot_analytics_rebuild` of 0021 did a merchant in one transaction: about
30 minutes over 10,000,000 purchases, holding the refresher's lock and a snapshot all along).

- `analytics_rebuild` (one row per merchant): the phase (`purchase`, `member`, `points`, `stats`, then
  `done`), the id the phase has reached, and the ids the rebuild covers (the largest when it started).
- `memberbot_analytics_rebuild_step(merchant, batch)`: one step in one transaction, under the
  refresher's advisory lock. The first (no row, or the last rebuild done) empties the merchant's rollups
  and records the largest ids; each next one adds the purchases, members or points postings of the next
  `batch` ids (through the refresh's own `memberbot_analytics_apply_parts`), or recomputes the member
  stats and cohorts' buyers of the next `batch` member ids, and moves the row on in the same
  transaction. A step that fails changes nothing; calling again resumes where the last commit left.
  It answers the phase it left the rebuild in (`done` at the end).
- Changes queued meanwhile: a step deletes the queued rows of the ids it covers (it reads their current
  state), and the refresher takes nothing while a rebuild is under way (the queue waits), so a change
  is counted once: by the step if it came before, by the refresher afterwards.
- `memberbot_analytics_apply_parts(sales, stats)`: 0021's `memberbot_analytics_apply` with its sales,
  members and points part and its member-stats part each optional (the refresh still runs both).
"""

import importlib

from tortoise import migrations
from tortoise.migrations import operations as ops

_ANALYTICS = importlib.import_module("migrations.0021_analytics")
_STATS_START = "    -- Members whose purchases changed: their stats recomputed from their purchases."
_STATS_END = "    INSERT INTO points_day AS s"
_SALES_START = "    INSERT INTO sales_day AS s"
_SALES_END = "    -- New members: member_day and their cohort's size."


def _apply_parts() -> str:
    """0021's apply function as `memberbot_analytics_apply_parts(p_sales, p_stats)`."""
    text = _ANALYTICS.APPLY
    start = text.index("CREATE OR REPLACE FUNCTION memberbot_analytics_apply()")
    end = text.index("$$;", start) + 3
    body = text[start:end]
    for marker in (_STATS_START, _STATS_END, _SALES_START, _SALES_END):
        assert body.count(marker) == 1, marker
    body = body.replace(
        "memberbot_analytics_apply()", "memberbot_analytics_apply_parts(p_sales boolean, p_stats boolean)"
    )
    body = body.replace(_SALES_START, "    IF p_sales THEN\n" + _SALES_START)
    body = body.replace(_SALES_END, "    END IF;\n" + _SALES_END)
    body = body.replace(_STATS_START, "    IF p_stats THEN\n" + _STATS_START)
    body = body.replace(_STATS_END, "    END IF;\n    IF p_sales THEN\n" + _STATS_END)
    body = body.replace(
        "    DROP TABLE aq_purchase, aq_line, aq_member, aq_stats;",
        "    END IF;\n    DROP TABLE IF EXISTS aq_purchase, aq_line, aq_member, aq_stats;",
    )
    return body + "\n"


# aq_line is created in the sales part; the stats part needs only aq_purchase.
FUNCTIONS = (
    _apply_parts()
    + r"""
CREATE TABLE IF NOT EXISTS analytics_rebuild (
    merchant_id integer PRIMARY KEY,
    phase varchar(16) NOT NULL,
    reached bigint NOT NULL DEFAULT 0,
    purchase_max bigint NOT NULL,
    member_max bigint NOT NULL,
    points_max bigint NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz
);

CREATE OR REPLACE FUNCTION memberbot_analytics_rebuild_step(p_merchant integer, p_batch integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_state analytics_rebuild;
    v_upto bigint;
    v_max bigint;
    v_next text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('memberbot_analytics_refresh'));
    SELECT * INTO v_state FROM analytics_rebuild WHERE merchant_id = p_merchant FOR UPDATE;
    IF v_state.merchant_id IS NULL OR v_state.phase = 'done' THEN
        DELETE FROM sales_day WHERE merchant_id = p_merchant;
        DELETE FROM sales_day_category WHERE merchant_id = p_merchant;
        DELETE FROM sales_month_category WHERE merchant_id = p_merchant;
        DELETE FROM sales_day_product WHERE merchant_id = p_merchant;
        DELETE FROM sales_month_product WHERE merchant_id = p_merchant;
        DELETE FROM member_day WHERE merchant_id = p_merchant;
        DELETE FROM points_day WHERE merchant_id = p_merchant;
        DELETE FROM member_stats WHERE merchant_id = p_merchant;
        DELETE FROM member_cohort WHERE merchant_id = p_merchant;
        INSERT INTO analytics_rebuild (merchant_id, phase, reached, purchase_max, member_max, points_max,
                                       started_at, finished_at)
        VALUES (p_merchant, 'purchase', 0, COALESCE((SELECT max(id) FROM purchase), 0),
                COALESCE((SELECT max(id) FROM member), 0), COALESCE((SELECT max(id) FROM points_transaction), 0),
                clock_timestamp(), NULL)
        ON CONFLICT (merchant_id) DO UPDATE
           SET phase = EXCLUDED.phase, reached = 0, purchase_max = EXCLUDED.purchase_max,
               member_max = EXCLUDED.member_max, points_max = EXCLUDED.points_max,
               started_at = EXCLUDED.started_at, finished_at = NULL;
        RETURN 'purchase';
    END IF;
    v_upto := v_state.reached + p_batch;
    IF v_state.phase = 'purchase' THEN
        DELETE FROM analytics_queue q
         WHERE q.kind = 'purchase' AND q.ref > v_state.reached AND q.ref <= v_upto
           AND EXISTS (SELECT 1 FROM purchase p WHERE p.id = q.ref AND p.merchant_id = p_merchant);
        CREATE TEMP TABLE aq ON COMMIT DROP AS
        SELECT 'purchase'::varchar(16) AS kind, id AS ref, 1::smallint AS sign FROM purchase
         WHERE id > v_state.reached AND id <= v_upto AND merchant_id = p_merchant AND status = 'completed';
        PERFORM memberbot_analytics_apply_parts(true, false);
        v_max := v_state.purchase_max;
        v_next := 'member';
    ELSIF v_state.phase = 'member' THEN
        DELETE FROM analytics_queue q
         WHERE q.kind = 'member' AND q.ref > v_state.reached AND q.ref <= v_upto
           AND EXISTS (SELECT 1 FROM member mb WHERE mb.id = q.ref AND mb.merchant_id = p_merchant);
        CREATE TEMP TABLE aq ON COMMIT DROP AS
        SELECT 'member'::varchar(16) AS kind, id AS ref, 1::smallint AS sign FROM member
         WHERE id > v_state.reached AND id <= v_upto AND merchant_id = p_merchant;
        PERFORM memberbot_analytics_apply_parts(true, false);
        v_max := v_state.member_max;
        v_next := 'points';
    ELSIF v_state.phase = 'points' THEN
        DELETE FROM analytics_queue q
         WHERE q.kind = 'points' AND q.ref > v_state.reached AND q.ref <= v_upto
           AND EXISTS (SELECT 1 FROM points_transaction t WHERE t.id = q.ref AND t.merchant_id = p_merchant);
        CREATE TEMP TABLE aq ON COMMIT DROP AS
        SELECT 'points'::varchar(16) AS kind, id AS ref, 1::smallint AS sign FROM points_transaction
         WHERE id > v_state.reached AND id <= v_upto AND merchant_id = p_merchant;
        PERFORM memberbot_analytics_apply_parts(true, false);
        v_max := v_state.points_max;
        v_next := 'stats';
    ELSE  -- stats: every member of the window with a completed purchase, its stats and cohort recomputed
        CREATE TEMP TABLE aq ON COMMIT DROP AS
        SELECT 'purchase'::varchar(16) AS kind, p.id AS ref, 1::smallint AS sign
          FROM member mb JOIN purchase p ON p.member_id = mb.id AND p.status = 'completed'
         WHERE mb.id > v_state.reached AND mb.id <= v_upto AND mb.merchant_id = p_merchant;
        PERFORM memberbot_analytics_apply_parts(false, true);
        v_max := v_state.member_max;
        v_next := 'done';
    END IF;
    DROP TABLE aq;
    IF v_upto >= v_max THEN
        UPDATE analytics_rebuild
           SET phase = v_next, reached = 0,
               finished_at = CASE WHEN v_next = 'done' THEN clock_timestamp() END
         WHERE merchant_id = p_merchant;
        RETURN v_next;
    END IF;
    UPDATE analytics_rebuild SET reached = v_upto WHERE merchant_id = p_merchant;
    RETURN v_state.phase;
END
$$;

-- The refresh of 0021, taking nothing while a rebuild is under way (its steps read the queued rows'
-- current state; what is queued for ids they already passed waits for the refresh after it).
CREATE OR REPLACE FUNCTION memberbot_analytics_refresh(p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_taken integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('memberbot_analytics_refresh'));
    IF EXISTS (SELECT 1 FROM analytics_rebuild WHERE finished_at IS NULL) THEN
        RETURN 0;
    END IF;
    CREATE TEMP TABLE aq ON COMMIT DROP AS
    WITH taken AS (
        DELETE FROM analytics_queue
         WHERE id IN (SELECT id FROM analytics_queue ORDER BY id LIMIT p_limit FOR UPDATE SKIP LOCKED)
        RETURNING kind, ref, sign
    )
    SELECT kind, ref, sign FROM taken;
    SELECT count(*) INTO v_taken FROM aq;
    IF v_taken > 0 THEN
        PERFORM memberbot_analytics_apply();
    END IF;
    DROP TABLE aq;
    RETURN v_taken;
END
$$;
"""
)

DROP = r"""
DROP FUNCTION IF EXISTS memberbot_analytics_rebuild_step(integer, integer);
DROP FUNCTION IF EXISTS memberbot_analytics_apply_parts(boolean, boolean);
DROP TABLE IF EXISTS analytics_rebuild;
"""


async def create(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(FUNCTIONS)  # type: ignore[attr-defined]


async def drop(apps: object, schema_editor: object) -> None:
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(DROP)
    await client.execute_script(_ANALYTICS.APPLY)  # the refresh without the pause


class Migration(migrations.Migration):
    dependencies = [("models", "0025_credit_rollup")]

    initial = False

    operations = [ops.RunPython(create, drop)]
