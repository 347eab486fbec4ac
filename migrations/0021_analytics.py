"""Analytics: rollup tables the back office's analyses read, kept by one PostgreSQL function.

- `analytics_queue`: what changed and has not been rolled up yet. Triggers add a row when a purchase is
  completed or refunded (`purchase`, ±1), a points posting is made (`points`), a member is created
  (`member`) — in the writing transaction, an INSERT that contends with nothing.
- `memberbot_analytics_refresh(limit)`: takes the oldest queued rows (SKIP LOCKED, one refresher at a
  time under a transaction advisory lock) and adds them to the rollups; run every minute by the worker
  (`handlers.jobs.analytics_refresh`). `memberbot_analytics_rebuild(merchant)` recomputes a merchant's
  rollups from the source tables (the benchmark's data, or after a repair).
- Rollups, keyed by the merchant-local day (`merchant.timezone`) and the store (0: none):
  `sales_day` (per staff: purchases, amount, discount, paid), `sales_day_category` and
  `sales_month_category`, `sales_day_product` and `sales_month_product` (per item line: quantity,
  revenue at unit price, cost and the revenue whose cost is known), `member_day` (new members per source
  and acquiring staff), `points_day` (points in and out per posting kind, by the member's store),
  `member_stats` (per member: completed purchases, cash, first/last purchase, median interval between
  purchases, when the next one is due) and `member_cohort` (per registration month and store: members,
  buyers, repeat buyers, cash).
  A refunded purchase leaves the figures of the day it was made.
- `mall_item.low_stock_threshold` (库存预警; NULL: none).
- `member_snapshot` (members per registration month, store, tier, gender and age band),
  `member_region_snapshot` (per registration month, store and region) and `member_visit_snapshot` (per
  day of the last visit, store and tier), recomputed for each merchant every
  ten minutes by the worker (`memberbot_member_snapshot`).
- An index for the churn warning (members by last visit, else registration).
"""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

ROLLUPS = r"""
CREATE TABLE IF NOT EXISTS analytics_queue (
    id bigserial PRIMARY KEY,
    kind varchar(16) NOT NULL,
    ref bigint NOT NULL,
    sign smallint NOT NULL DEFAULT 1
);

CREATE TABLE IF NOT EXISTS sales_day (
    merchant_id integer NOT NULL, day date NOT NULL, store_id integer NOT NULL, staff_id integer NOT NULL,
    purchases bigint NOT NULL DEFAULT 0, amount_fen bigint NOT NULL DEFAULT 0,
    discount_fen bigint NOT NULL DEFAULT 0, paid_fen bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, store_id, staff_id)
);
CREATE TABLE IF NOT EXISTS sales_day_category (
    merchant_id integer NOT NULL, day date NOT NULL, store_id integer NOT NULL, category varchar(64) NOT NULL,
    qty bigint NOT NULL DEFAULT 0, revenue_fen bigint NOT NULL DEFAULT 0, cost_fen bigint NOT NULL DEFAULT 0,
    costed_revenue_fen bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, store_id, category)
);
CREATE TABLE IF NOT EXISTS sales_month_category (
    merchant_id integer NOT NULL, month date NOT NULL, store_id integer NOT NULL, category varchar(64) NOT NULL,
    qty bigint NOT NULL DEFAULT 0, revenue_fen bigint NOT NULL DEFAULT 0, cost_fen bigint NOT NULL DEFAULT 0,
    costed_revenue_fen bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, month, store_id, category)
);
CREATE TABLE IF NOT EXISTS sales_day_product (
    merchant_id integer NOT NULL, day date NOT NULL, store_id integer NOT NULL, sku varchar(64) NOT NULL,
    qty bigint NOT NULL DEFAULT 0, revenue_fen bigint NOT NULL DEFAULT 0, cost_fen bigint NOT NULL DEFAULT 0,
    costed_revenue_fen bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, store_id, sku)
);
CREATE TABLE IF NOT EXISTS sales_month_product (
    merchant_id integer NOT NULL, month date NOT NULL, store_id integer NOT NULL, sku varchar(64) NOT NULL,
    qty bigint NOT NULL DEFAULT 0, revenue_fen bigint NOT NULL DEFAULT 0, cost_fen bigint NOT NULL DEFAULT 0,
    costed_revenue_fen bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, month, store_id, sku)
);
CREATE TABLE IF NOT EXISTS member_day (
    merchant_id integer NOT NULL, day date NOT NULL, store_id integer NOT NULL, source varchar(16) NOT NULL,
    staff_id integer NOT NULL, members bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, store_id, source, staff_id)
);
CREATE TABLE IF NOT EXISTS points_day (
    merchant_id integer NOT NULL, day date NOT NULL, store_id integer NOT NULL, kind varchar(24) NOT NULL,
    points_in bigint NOT NULL DEFAULT 0, points_out bigint NOT NULL DEFAULT 0, postings bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, store_id, kind)
);
CREATE TABLE IF NOT EXISTS member_stats (
    member_id integer PRIMARY KEY, merchant_id integer NOT NULL, store_id integer NOT NULL,
    cohort date NOT NULL, purchases integer NOT NULL DEFAULT 0, spend_fen bigint NOT NULL DEFAULT 0,
    first_at timestamptz, last_at timestamptz, median_days double precision, due_at timestamptz
);
CREATE INDEX IF NOT EXISTS member_stats_recent ON member_stats (merchant_id, last_at) WHERE due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS member_cohort (
    merchant_id integer NOT NULL, month date NOT NULL, store_id integer NOT NULL,
    members bigint NOT NULL DEFAULT 0, buyers bigint NOT NULL DEFAULT 0, repeaters bigint NOT NULL DEFAULT 0,
    spend_fen bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, month, store_id)
);

-- Members per registration month, store, tier, gender and age band, recomputed by the worker every ten
-- minutes (`memberbot_member_snapshot`): the tiers and gender/age analyses read whole months from it.
CREATE TABLE IF NOT EXISTS member_snapshot (
    merchant_id integer NOT NULL, month date NOT NULL, store_id integer NOT NULL, tier_code varchar(32) NOT NULL,
    gender varchar(16) NOT NULL, age_band smallint NOT NULL, members bigint NOT NULL, spend_fen bigint NOT NULL,
    PRIMARY KEY (merchant_id, month, store_id, tier_code, gender, age_band)
);
-- The same members per merchant-local day of their last visit (else registration), store and tier: the
-- churn warning's counts.
CREATE TABLE IF NOT EXISTS member_visit_snapshot (
    merchant_id integer NOT NULL, day date NOT NULL, store_id integer NOT NULL, tier_code varchar(32) NOT NULL,
    members bigint NOT NULL, spend_fen bigint NOT NULL,
    PRIMARY KEY (merchant_id, day, store_id, tier_code)
);
-- And per registration month, store and region: the province of the latest mall shipping address, else
-- the acquiring store's name.
CREATE TABLE IF NOT EXISTS member_region_snapshot (
    merchant_id integer NOT NULL, month date NOT NULL, store_id integer NOT NULL, basis varchar(8) NOT NULL,
    region varchar(128) NOT NULL, members bigint NOT NULL,
    PRIMARY KEY (merchant_id, month, store_id, basis, region)
);
CREATE TABLE IF NOT EXISTS member_snapshot_state (
    merchant_id integer PRIMARY KEY, refreshed_at timestamptz NOT NULL, as_of date NOT NULL
);
CREATE INDEX IF NOT EXISTS member_churn
    ON member (merchant_id, (COALESCE(last_visit_at, registered_at)), lifetime_spend_fen);

CREATE OR REPLACE FUNCTION memberbot_analytics_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'purchase' THEN
        IF TG_OP = 'INSERT' THEN
            IF NEW.status = 'completed' THEN
                INSERT INTO analytics_queue (kind, ref, sign) VALUES ('purchase', NEW.id, 1);
            END IF;
        ELSIF OLD.status = 'completed' THEN
            INSERT INTO analytics_queue (kind, ref, sign) VALUES ('purchase', NEW.id, -1);
        ELSIF NEW.status = 'completed' THEN
            INSERT INTO analytics_queue (kind, ref, sign) VALUES ('purchase', NEW.id, 1);
        END IF;
    ELSIF TG_TABLE_NAME = 'points_transaction' THEN
        INSERT INTO analytics_queue (kind, ref, sign) VALUES ('points', NEW.id, 1);
    ELSE
        INSERT INTO analytics_queue (kind, ref, sign) VALUES ('member', NEW.id, 1);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS purchase_analytics ON purchase;
CREATE TRIGGER purchase_analytics AFTER INSERT ON purchase
    FOR EACH ROW EXECUTE FUNCTION memberbot_analytics_enqueue();
DROP TRIGGER IF EXISTS purchase_analytics_status ON purchase;
CREATE TRIGGER purchase_analytics_status AFTER UPDATE OF status ON purchase
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION memberbot_analytics_enqueue();
DROP TRIGGER IF EXISTS points_transaction_analytics ON points_transaction;
CREATE TRIGGER points_transaction_analytics AFTER INSERT ON points_transaction
    FOR EACH ROW EXECUTE FUNCTION memberbot_analytics_enqueue();
DROP TRIGGER IF EXISTS member_analytics ON member;
CREATE TRIGGER member_analytics AFTER INSERT ON member
    FOR EACH ROW EXECUTE FUNCTION memberbot_analytics_enqueue();
"""

# The rollups of a set of queued rows in the temporary table `aq` (kind, ref, sign). Shared by the
# refresh (the queue) and the rebuild (every row of a merchant).
APPLY = r"""
CREATE OR REPLACE FUNCTION memberbot_analytics_apply() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE aq_purchase ON COMMIT DROP AS
    SELECT p.id, p.merchant_id, p.member_id, COALESCE(p.store_id, 0) AS store_id,
           COALESCE(p.staff_id, 0) AS staff_id, (p.created_at AT TIME ZONE m.timezone)::date AS day,
           q.sign, p.amount_fen, p.discount_fen, p.paid_fen, p.items
      FROM (SELECT ref, sum(sign) AS sign FROM aq WHERE kind = 'purchase' GROUP BY ref) q
      JOIN purchase p ON p.id = q.ref
      JOIN merchant m ON m.id = p.merchant_id
     WHERE q.sign <> 0;

    INSERT INTO sales_day AS s (merchant_id, day, store_id, staff_id, purchases, amount_fen, discount_fen, paid_fen)
    SELECT merchant_id, day, store_id, staff_id, sum(sign), sum(sign * amount_fen), sum(sign * discount_fen),
           sum(sign * paid_fen)
      FROM aq_purchase GROUP BY merchant_id, day, store_id, staff_id
    ON CONFLICT (merchant_id, day, store_id, staff_id) DO UPDATE
       SET purchases = s.purchases + EXCLUDED.purchases, amount_fen = s.amount_fen + EXCLUDED.amount_fen,
           discount_fen = s.discount_fen + EXCLUDED.discount_fen, paid_fen = s.paid_fen + EXCLUDED.paid_fen;

    CREATE TEMP TABLE aq_line ON COMMIT DROP AS
    SELECT a.merchant_id, a.day, a.store_id, left(i->>'sku', 64) AS sku, left(COALESCE(i->>'category', ''), 64) AS category,
           a.sign * (i->>'qty')::bigint AS qty,
           a.sign * (i->>'qty')::bigint * (i->>'unit_price_fen')::bigint AS revenue_fen,
           a.sign * COALESCE((i->>'qty')::bigint * (i->>'unit_cost_fen')::bigint, 0) AS cost_fen,
           CASE WHEN i->>'unit_cost_fen' IS NULL THEN 0
                ELSE a.sign * (i->>'qty')::bigint * (i->>'unit_price_fen')::bigint END AS costed_revenue_fen
      FROM aq_purchase a, jsonb_array_elements(CASE WHEN jsonb_typeof(a.items) = 'array' THEN a.items
                                                     ELSE '[]'::jsonb END) i;

    INSERT INTO sales_day_category AS s (merchant_id, day, store_id, category, qty, revenue_fen, cost_fen, costed_revenue_fen)
    SELECT merchant_id, day, store_id, category, sum(qty), sum(revenue_fen), sum(cost_fen), sum(costed_revenue_fen)
      FROM aq_line GROUP BY merchant_id, day, store_id, category
    ON CONFLICT (merchant_id, day, store_id, category) DO UPDATE
       SET qty = s.qty + EXCLUDED.qty, revenue_fen = s.revenue_fen + EXCLUDED.revenue_fen,
           cost_fen = s.cost_fen + EXCLUDED.cost_fen, costed_revenue_fen = s.costed_revenue_fen + EXCLUDED.costed_revenue_fen;

    INSERT INTO sales_month_category AS s (merchant_id, month, store_id, category, qty, revenue_fen, cost_fen,
                                           costed_revenue_fen)
    SELECT merchant_id, date_trunc('month', day)::date, store_id, category, sum(qty), sum(revenue_fen), sum(cost_fen),
           sum(costed_revenue_fen)
      FROM aq_line GROUP BY merchant_id, date_trunc('month', day)::date, store_id, category
    ON CONFLICT (merchant_id, month, store_id, category) DO UPDATE
       SET qty = s.qty + EXCLUDED.qty, revenue_fen = s.revenue_fen + EXCLUDED.revenue_fen,
           cost_fen = s.cost_fen + EXCLUDED.cost_fen, costed_revenue_fen = s.costed_revenue_fen + EXCLUDED.costed_revenue_fen;

    INSERT INTO sales_day_product AS s (merchant_id, day, store_id, sku, qty, revenue_fen, cost_fen, costed_revenue_fen)
    SELECT merchant_id, day, store_id, sku, sum(qty), sum(revenue_fen), sum(cost_fen), sum(costed_revenue_fen)
      FROM aq_line GROUP BY merchant_id, day, store_id, sku
    ON CONFLICT (merchant_id, day, store_id, sku) DO UPDATE
       SET qty = s.qty + EXCLUDED.qty, revenue_fen = s.revenue_fen + EXCLUDED.revenue_fen,
           cost_fen = s.cost_fen + EXCLUDED.cost_fen, costed_revenue_fen = s.costed_revenue_fen + EXCLUDED.costed_revenue_fen;

    INSERT INTO sales_month_product AS s (merchant_id, month, store_id, sku, qty, revenue_fen, cost_fen, costed_revenue_fen)
    SELECT merchant_id, date_trunc('month', day)::date, store_id, sku, sum(qty), sum(revenue_fen), sum(cost_fen),
           sum(costed_revenue_fen)
      FROM aq_line GROUP BY merchant_id, date_trunc('month', day)::date, store_id, sku
    ON CONFLICT (merchant_id, month, store_id, sku) DO UPDATE
       SET qty = s.qty + EXCLUDED.qty, revenue_fen = s.revenue_fen + EXCLUDED.revenue_fen,
           cost_fen = s.cost_fen + EXCLUDED.cost_fen, costed_revenue_fen = s.costed_revenue_fen + EXCLUDED.costed_revenue_fen;

    -- New members: member_day and their cohort's size.
    CREATE TEMP TABLE aq_member ON COMMIT DROP AS
    SELECT mb.id, mb.merchant_id, (mb.registered_at AT TIME ZONE m.timezone)::date AS day,
           COALESCE(mb.store_id, 0) AS store_id, mb.source, COALESCE(mb.acquired_by_id, 0) AS staff_id
      FROM (SELECT DISTINCT ref FROM aq WHERE kind = 'member') q
      JOIN member mb ON mb.id = q.ref
      JOIN merchant m ON m.id = mb.merchant_id;

    INSERT INTO member_day AS s (merchant_id, day, store_id, source, staff_id, members)
    SELECT merchant_id, day, store_id, source, staff_id, count(*)
      FROM aq_member GROUP BY merchant_id, day, store_id, source, staff_id
    ON CONFLICT (merchant_id, day, store_id, source, staff_id) DO UPDATE SET members = s.members + EXCLUDED.members;

    INSERT INTO member_cohort AS s (merchant_id, month, store_id, members)
    SELECT merchant_id, date_trunc('month', day)::date, store_id, count(*)
      FROM aq_member GROUP BY merchant_id, date_trunc('month', day)::date, store_id
    ON CONFLICT (merchant_id, month, store_id) DO UPDATE SET members = s.members + EXCLUDED.members;

    -- Members whose purchases changed: their stats recomputed from their purchases.
    CREATE TEMP TABLE aq_stats ON COMMIT DROP AS
    WITH touched AS (SELECT DISTINCT member_id FROM aq_purchase),
    visits AS (
        SELECT p.member_id, p.created_at, p.paid_fen,
               extract(epoch FROM p.created_at - lag(p.created_at) OVER w) / 86400.0 AS gap
          FROM touched t JOIN purchase p ON p.member_id = t.member_id AND p.status = 'completed'
        WINDOW w AS (PARTITION BY p.member_id ORDER BY p.created_at, p.id)
    ),
    fresh AS (
        SELECT member_id, count(*)::integer AS purchases, sum(paid_fen)::bigint AS spend_fen,
               min(created_at) AS first_at, max(created_at) AS last_at,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS median_days
          FROM visits GROUP BY member_id
    )
    SELECT mb.id AS member_id, mb.merchant_id, COALESCE(mb.store_id, 0) AS store_id,
           date_trunc('month', mb.registered_at AT TIME ZONE m.timezone)::date AS cohort,
           COALESCE(f.purchases, 0) AS purchases, COALESCE(f.spend_fen, 0) AS spend_fen, f.first_at, f.last_at,
           f.median_days,
           f.last_at + make_interval(secs => f.median_days * 86400) AS due_at,
           COALESCE(o.purchases, 0) AS old_purchases, COALESCE(o.spend_fen, 0) AS old_spend_fen
      FROM touched t
      JOIN member mb ON mb.id = t.member_id
      JOIN merchant m ON m.id = mb.merchant_id
      LEFT JOIN fresh f ON f.member_id = t.member_id
      LEFT JOIN member_stats o ON o.member_id = t.member_id;

    INSERT INTO member_stats AS s (member_id, merchant_id, store_id, cohort, purchases, spend_fen, first_at,
                                   last_at, median_days, due_at)
    SELECT member_id, merchant_id, store_id, cohort, purchases, spend_fen, first_at, last_at, median_days, due_at
      FROM aq_stats
    ON CONFLICT (member_id) DO UPDATE
       SET purchases = EXCLUDED.purchases, spend_fen = EXCLUDED.spend_fen, first_at = EXCLUDED.first_at,
           last_at = EXCLUDED.last_at, median_days = EXCLUDED.median_days, due_at = EXCLUDED.due_at;

    INSERT INTO member_cohort AS s (merchant_id, month, store_id, buyers, repeaters, spend_fen)
    SELECT merchant_id, cohort, store_id,
           sum((purchases > 0)::int - (old_purchases > 0)::int),
           sum((purchases > 1)::int - (old_purchases > 1)::int),
           sum(spend_fen - old_spend_fen)
      FROM aq_stats GROUP BY merchant_id, cohort, store_id
    ON CONFLICT (merchant_id, month, store_id) DO UPDATE
       SET buyers = s.buyers + EXCLUDED.buyers, repeaters = s.repeaters + EXCLUDED.repeaters,
           spend_fen = s.spend_fen + EXCLUDED.spend_fen;

    INSERT INTO points_day AS s (merchant_id, day, store_id, kind, points_in, points_out, postings)
    SELECT t.merchant_id, (t.created_at AT TIME ZONE m.timezone)::date, COALESCE(mb.store_id, 0), t.kind,
           sum(GREATEST(t.delta, 0)), sum(GREATEST(-t.delta, 0)), count(*)
      FROM (SELECT DISTINCT ref FROM aq WHERE kind = 'points') q
      JOIN points_transaction t ON t.id = q.ref
      JOIN member mb ON mb.id = t.member_id
      JOIN merchant m ON m.id = t.merchant_id
     GROUP BY 1, 2, 3, 4
    ON CONFLICT (merchant_id, day, store_id, kind) DO UPDATE
       SET points_in = s.points_in + EXCLUDED.points_in, points_out = s.points_out + EXCLUDED.points_out,
           postings = s.postings + EXCLUDED.postings;

    DROP TABLE aq_purchase, aq_line, aq_member, aq_stats;
END
$$;

-- Age bands (index into handlers.analytics.members.AGE_BANDS; 6: unknown): whole years of age on p_today.
CREATE OR REPLACE FUNCTION memberbot_age_band(p_birthday date, p_today date) RETURNS smallint
LANGUAGE sql IMMUTABLE AS $$
SELECT (CASE WHEN p_birthday IS NULL OR p_birthday > p_today THEN 6
             ELSE width_bucket(date_part('year', age(p_today, p_birthday)), ARRAY[18, 25, 35, 45, 55]::float8[])
        END)::smallint
$$;

CREATE OR REPLACE FUNCTION memberbot_member_snapshot(p_merchant integer, p_today date, p_now timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_rows integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('memberbot_member_snapshot'), p_merchant);
    DELETE FROM member_snapshot WHERE merchant_id = p_merchant;
    INSERT INTO member_snapshot (merchant_id, month, store_id, tier_code, gender, age_band, members, spend_fen)
    SELECT p_merchant, date_trunc('month', m.registered_at AT TIME ZONE mc.timezone)::date, COALESCE(m.store_id, 0),
           COALESCE(t.tier_code, ''), COALESCE(m.gender, 'unknown'), memberbot_age_band(m.birthday, p_today),
           count(*), sum(m.lifetime_spend_fen)
      FROM member m
      JOIN merchant mc ON mc.id = m.merchant_id
      LEFT JOIN member_tier t ON t.member_id = m.id
     WHERE m.merchant_id = p_merchant AND m.anonymized_at IS NULL
     GROUP BY 1, 2, 3, 4, 5, 6;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    DELETE FROM member_visit_snapshot WHERE merchant_id = p_merchant;
    INSERT INTO member_visit_snapshot (merchant_id, day, store_id, tier_code, members, spend_fen)
    SELECT p_merchant, (COALESCE(m.last_visit_at, m.registered_at) AT TIME ZONE mc.timezone)::date,
           COALESCE(m.store_id, 0), COALESCE(t.tier_code, ''), count(*), sum(m.lifetime_spend_fen)
      FROM member m
      JOIN merchant mc ON mc.id = m.merchant_id
      LEFT JOIN member_tier t ON t.member_id = m.id
     WHERE m.merchant_id = p_merchant AND m.anonymized_at IS NULL
     GROUP BY 1, 2, 3, 4;
    DELETE FROM member_region_snapshot WHERE merchant_id = p_merchant;
    INSERT INTO member_region_snapshot (merchant_id, month, store_id, basis, region, members)
    WITH stated AS (
        SELECT DISTINCT ON (o.member_id) o.member_id,
               NULLIF(split_part(btrim(o.address->>'region'), ' ', 1), '') AS region
          FROM mall_order o
         WHERE o.merchant_id = p_merchant AND o.address ? 'region'
         ORDER BY o.member_id, o.id DESC
    )
    SELECT p_merchant, date_trunc('month', m.registered_at AT TIME ZONE mc.timezone)::date, COALESCE(m.store_id, 0),
           CASE WHEN r.region IS NOT NULL THEN 'address' WHEN s.id IS NOT NULL THEN 'store' ELSE 'unknown' END,
           left(COALESCE(r.region, s.name, ''), 128), count(*)
      FROM member m
      JOIN merchant mc ON mc.id = m.merchant_id
      LEFT JOIN stated r ON r.member_id = m.id
      LEFT JOIN store s ON s.id = m.store_id
     WHERE m.merchant_id = p_merchant AND m.anonymized_at IS NULL
     GROUP BY 1, 2, 3, 4, 5;
    INSERT INTO member_snapshot_state (merchant_id, refreshed_at, as_of) VALUES (p_merchant, p_now, p_today)
    ON CONFLICT (merchant_id) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at, as_of = EXCLUDED.as_of;
    RETURN v_rows;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_analytics_refresh(p_limit integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_taken integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('memberbot_analytics_refresh'));
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

CREATE OR REPLACE FUNCTION memberbot_analytics_rebuild(p_merchant integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('memberbot_analytics_refresh'));
    DELETE FROM analytics_queue q WHERE (q.kind = 'purchase' AND EXISTS (
        SELECT 1 FROM purchase p WHERE p.id = q.ref AND p.merchant_id = p_merchant))
       OR (q.kind = 'member' AND EXISTS (SELECT 1 FROM member mb WHERE mb.id = q.ref AND mb.merchant_id = p_merchant))
       OR (q.kind = 'points' AND EXISTS (
        SELECT 1 FROM points_transaction t WHERE t.id = q.ref AND t.merchant_id = p_merchant));
    DELETE FROM sales_day WHERE merchant_id = p_merchant;
    DELETE FROM sales_day_category WHERE merchant_id = p_merchant;
    DELETE FROM sales_month_category WHERE merchant_id = p_merchant;
    DELETE FROM sales_day_product WHERE merchant_id = p_merchant;
    DELETE FROM sales_month_product WHERE merchant_id = p_merchant;
    DELETE FROM member_day WHERE merchant_id = p_merchant;
    DELETE FROM points_day WHERE merchant_id = p_merchant;
    DELETE FROM member_stats WHERE merchant_id = p_merchant;
    DELETE FROM member_cohort WHERE merchant_id = p_merchant;
    CREATE TEMP TABLE aq ON COMMIT DROP AS
    SELECT 'purchase'::varchar(16) AS kind, id AS ref, 1::smallint AS sign
      FROM purchase WHERE merchant_id = p_merchant AND status = 'completed'
    UNION ALL SELECT 'member', id, 1 FROM member WHERE merchant_id = p_merchant
    UNION ALL SELECT 'points', id, 1 FROM points_transaction WHERE merchant_id = p_merchant;
    PERFORM memberbot_analytics_apply();
    DROP TABLE aq;
END
$$;
"""

DROP = r"""
DROP TRIGGER IF EXISTS member_analytics ON member;
DROP TRIGGER IF EXISTS points_transaction_analytics ON points_transaction;
DROP TRIGGER IF EXISTS purchase_analytics_status ON purchase;
DROP TRIGGER IF EXISTS purchase_analytics ON purchase;
DROP FUNCTION IF EXISTS memberbot_analytics_rebuild(integer);
DROP FUNCTION IF EXISTS memberbot_analytics_refresh(integer);
DROP FUNCTION IF EXISTS memberbot_analytics_apply();
DROP FUNCTION IF EXISTS memberbot_analytics_enqueue();
DROP FUNCTION IF EXISTS memberbot_member_snapshot(integer, date, timestamptz);
DROP FUNCTION IF EXISTS memberbot_age_band(date, date);
DROP INDEX IF EXISTS member_churn;
DROP TABLE IF EXISTS member_snapshot_state, member_region_snapshot, member_visit_snapshot, member_snapshot, member_cohort, member_stats, points_day, member_day, sales_month_product,
    sales_day_product, sales_month_category, sales_day_category, sales_day, analytics_queue;
"""


async def create(apps: object, schema_editor: object) -> None:
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(ROLLUPS)
    await client.execute_script(APPLY)


async def drop(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(DROP)  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [("models", "0020_tags_segments")]

    initial = False

    operations = [
        ops.AddField(
            model_name="MallItem",
            name="low_stock_threshold",
            field=fields.IntField(null=True),
        ),
        ops.RunPython(create, drop),
    ]
