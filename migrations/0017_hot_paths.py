"""PostgreSQL: a till purchase as one server-side function call (one round trip instead of ten).

- `memberbot_tier_window(merchant, member, since)`: a member's tier-window stats (cash spend, points
  earned net of clawed-back earns, top-up principal) — the formula `handlers.loyalty.tiers` reads too.
- `memberbot_till_purchase(p jsonb)`: Python (`handlers.till.purchase`) prices the purchase and
  computes its points from one unlocked read (`handlers.till.context`); this function locks the
  member's points account, re-checks under the lock what the rules assumed — the idempotency key, the
  stored tier, the period totals (when the rule set depends on them), the account (when points are
  spent), the campaign pool, the coupon, the stored value — and answers `stale` if any of it moved,
  so Python recomputes under the lock. Otherwise it writes everything the purchase is: the row with
  its stored result, the coupon used, the offset debit, the stored-value payment, the earn or pending
  hold, the pool, the receipt notice and its task, and the after-purchase task only when it can matter
  (a tier threshold Python passes is reached, or a referred member's first purchase). Points and
  stored value move only through the one-writer functions of migration 0010.

Lock order as everywhere: points account, pool, coupon, stored-value account.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION memberbot_tier_window(p_merchant integer, p_member bigint, p_since timestamptz)
RETURNS TABLE (spend bigint, earned bigint, recharge bigint) LANGUAGE sql STABLE AS $$
SELECT
  (SELECT COALESCE(SUM(paid_fen), 0)::bigint FROM purchase
    WHERE merchant_id = p_merchant AND member_id = p_member AND status = 'completed'
      AND created_at >= p_since),
  (SELECT COALESCE(SUM(t.delta), 0)::bigint FROM points_transaction t
     LEFT JOIN points_transaction r ON r.id = t.reverses_id
    WHERE t.merchant_id = p_merchant AND t.member_id = p_member AND t.created_at >= p_since
      AND (t.kind LIKE 'earn%' OR (t.kind = 'reverse' AND r.kind LIKE 'earn%'))),
  (SELECT COALESCE(SUM(principal_delta), 0)::bigint FROM wallet_transaction
    WHERE merchant_id = p_merchant AND member_id = p_member AND kind = 'top_up'
      AND created_at >= p_since)
$$;

CREATE OR REPLACE FUNCTION memberbot_till_purchase(p jsonb)
RETURNS TABLE (outcome text, purchase_id bigint, balance integer, result jsonb, after_task bigint,
               notice_task bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_merchant integer := (p->>'merchant_id')::integer;
    v_member bigint := (p->>'member_id')::bigint;
    v_key text := p->>'idempotency_key';
    v_now timestamptz := (p->>'now')::timestamptz;
    v_actor text := p->>'actor';
    v_points integer := (p->>'points_earned')::integer;
    v_offset integer := (p->>'offset_points')::integer;
    v_principal bigint := COALESCE((p->>'wallet_principal')::bigint, 0);
    v_bonus bigint := COALESCE((p->>'wallet_bonus')::bigint, 0);
    v_account points_account;
    v_wallet wallet_account;
    v_pool points_pool;
    v_coupon coupon;
    v_spend bigint;
    v_today integer;
    v_purchase bigint;
    v_balance integer;
    v_result jsonb;
    v_after bigint;
    v_delivery bigint;
    v_notice bigint;
    v_found bigint;
BEGIN
    SELECT * INTO v_account FROM memberbot_points_account(v_merchant, v_member);
    IF v_account.id IS NULL THEN
        RETURN QUERY SELECT 'no_member'::text, NULL::bigint, 0, NULL::jsonb, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    -- Under the lock, each query of this (volatile) function sees everything committed before it.
    SELECT x.id INTO v_found FROM purchase x WHERE x.merchant_id = v_merchant AND x.idempotency_key = v_key;
    IF v_found IS NOT NULL THEN
        RETURN QUERY SELECT 'replay'::text, v_found, 0, NULL::jsonb, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    SELECT COALESCE(SUM(x.paid_fen) FILTER (WHERE x.created_at >= (p->>'year_start')::timestamptz), 0),
           COALESCE(SUM(x.points_earned) FILTER (WHERE x.created_at >= (p->>'day_start')::timestamptz), 0)
      INTO v_spend, v_today
      FROM purchase x
     WHERE x.merchant_id = v_merchant AND x.member_id = v_member AND x.status = 'completed'
       AND x.created_at >= LEAST((p->>'year_start')::timestamptz, (p->>'day_start')::timestamptz);
    IF (SELECT t.tier_code FROM member_tier t WHERE t.member_id = v_member) IS DISTINCT FROM p->>'stored_tier'
       OR ((p->>'period_matters')::boolean
           AND (v_spend <> (p->>'period_spend')::bigint OR v_today <> (p->>'points_today')::integer))
       OR (v_offset > 0 AND (v_account.balance <> (p->>'account_balance')::integer
                             OR v_account.updated_at IS DISTINCT FROM (p->>'account_updated_at')::timestamptz))
    THEN
        RETURN QUERY SELECT 'stale'::text, NULL::bigint, 0, NULL::jsonb, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF p->>'pool_code' IS NOT NULL THEN
        SELECT * INTO v_pool FROM points_pool pp
         WHERE pp.merchant_id = v_merchant AND pp.code = p->>'pool_code' FOR UPDATE;
        IF v_pool.id IS NULL OR v_pool.budget - v_pool.granted < v_points
           OR ((p->>'pool_capped')::boolean AND v_pool.budget - v_pool.granted <> (p->>'pool_remaining')::integer)
        THEN
            RETURN QUERY SELECT 'stale'::text, NULL::bigint, 0, NULL::jsonb, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
    END IF;
    IF p->>'coupon_id' IS NOT NULL THEN
        SELECT * INTO v_coupon FROM coupon c
         WHERE c.id = (p->>'coupon_id')::bigint AND c.merchant_id = v_merchant FOR UPDATE;
        IF v_coupon.status = 'used' THEN
            RETURN QUERY SELECT 'coupon_used'::text, NULL::bigint, 0, NULL::jsonb, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        IF v_coupon.id IS NULL OR v_coupon.status <> 'issued' OR v_coupon.member_id <> v_member
           OR v_coupon.valid_from > v_now OR v_coupon.valid_until <= v_now
        THEN
            RETURN QUERY SELECT 'stale'::text, NULL::bigint, 0, NULL::jsonb, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
    END IF;
    IF v_principal + v_bonus > 0 THEN
        SELECT * INTO v_wallet FROM memberbot_wallet_account(v_merchant, v_member);
        IF v_wallet.principal_fen <> (p->>'wallet_seen_principal')::bigint
           OR v_wallet.bonus_fen <> (p->>'wallet_seen_bonus')::bigint
        THEN
            RETURN QUERY SELECT 'stale'::text, NULL::bigint, 0, NULL::jsonb, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
    END IF;

    v_purchase := nextval(pg_get_serial_sequence('purchase', 'id'));
    IF v_offset > 0 THEN
        PERFORM memberbot_points_expire(v_account.id, v_now);
        SELECT d.transaction_id INTO v_found FROM memberbot_points_debit(
            v_account.id, v_offset, 'spend_offset', p->>'offset_key', 'purchase:' || v_purchase,
            v_actor, p->>'offset_reason', NULL,
            ARRAY(SELECT jsonb_array_elements_text(p->'offset_lots')::bigint),
            ARRAY(SELECT jsonb_array_elements_text(p->'offset_takes')::integer)) d;
        IF v_found IS NULL THEN
            RAISE EXCEPTION 'purchase %: offset key already used', v_key USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    IF v_principal + v_bonus > 0 THEN
        PERFORM memberbot_wallet_post(
            v_wallet.id, 'pay', -v_principal, -v_bonus, p->>'wallet_key',
            'purchase:' || v_purchase, v_actor, p->>'wallet_reason', NULL, v_now);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'purchase %: stored-value key already used', v_key USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    IF v_points > 0 AND (p->>'points_pending')::boolean THEN
        PERFORM memberbot_points_hold(
            v_account.id, v_points, p->>'earn_key', v_now, (p->>'available_at')::timestamptz,
            (p->>'expires_at')::timestamptz);
    ELSIF v_points > 0 THEN
        SELECT c.transaction_id INTO v_found FROM memberbot_points_credit(
            v_account.id, v_points, 'earn_purchase', p->>'earn_key', 'purchase:' || v_purchase,
            v_actor, p->>'earn_reason', v_now, (p->>'expires_at')::timestamptz) c;
        IF v_found IS NULL THEN
            RAISE EXCEPTION 'purchase %: earn key already used', v_key USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
    IF v_pool.id IS NOT NULL AND v_points > 0 THEN
        UPDATE points_pool SET granted = granted + v_points WHERE id = v_pool.id;
    END IF;

    SELECT a.balance INTO v_balance FROM points_account a WHERE a.id = v_account.id;
    v_result := p->'result' || jsonb_build_object('purchase_id', v_purchase, 'balance', v_balance);
    -- A unique violation here (the key committed meanwhile by another member's purchase) undoes it all.
    INSERT INTO purchase (id, merchant_id, member_id, store_id, staff_id, idempotency_key, request_digest,
                          amount_fen, discount_fen, offset_points, offset_fen, paid_fen, points_earned,
                          points_pending, rule_set_version, tier_code, period_spend_fen, points_today_before,
                          breakdown, items, status, pool_code, result, created_at)
    VALUES (v_purchase, v_merchant, v_member, (p->>'store_id')::integer, (p->>'staff_id')::integer, v_key,
            p->>'request_digest', (p->>'amount_fen')::bigint, (p->>'discount_fen')::bigint, v_offset,
            (p->>'offset_fen')::bigint, (p->>'paid_fen')::bigint, v_points, (p->>'points_pending')::boolean,
            (p->>'rule_set_version')::integer, p->>'tier_code', v_spend, v_today, p->'breakdown', p->'items',
            'completed', CASE WHEN v_points > 0 THEN v_pool.code END, v_result, clock_timestamp());
    IF v_coupon.id IS NOT NULL THEN
        UPDATE coupon SET status = 'used', used_at = v_now, used_purchase_id = v_purchase,
                          discount_fen = (p->>'coupon_fen')::integer
         WHERE id = v_coupon.id;
        INSERT INTO coupon_event (merchant_id, coupon_id, kind, actor, reference, created_at)
        VALUES (v_merchant, v_coupon.id, 'used', left(v_actor, 32), 'purchase:' || v_purchase, clock_timestamp());
    END IF;
    -- The receipt (handlers.notices.delivery.queue_notice) and its task (handlers.core.tasks.queue_for).
    INSERT INTO notice_delivery (merchant_id, member_id, kind, event_key, context, status, reason, job_status,
                                 text, created_at, updated_at)
    VALUES (v_merchant, v_member, 'purchase_receipt', 'purchase:' || v_purchase,
            p->'receipt' || jsonb_build_object('balance', v_balance), 'queued', '', '', '',
            (p->>'queued_at')::timestamptz, (p->>'queued_at')::timestamptz)
    ON CONFLICT (merchant_id, kind, member_id, event_key) DO NOTHING
    RETURNING id INTO v_delivery;
    IF v_delivery IS NOT NULL THEN
        INSERT INTO task (merchant_id, kind, key, payload, status, attempts, run_after, lease_until, last_error,
                          created_at)
        VALUES (v_merchant, 'notice.send', 'notice:' || v_delivery, jsonb_build_object('delivery_id', v_delivery),
                'pending', 0, (p->>'queued_at')::timestamptz, NULL, '', (p->>'queued_at')::timestamptz)
        ON CONFLICT (kind, key) DO NOTHING
        RETURNING id INTO v_notice;
    END IF;
    -- The after-purchase effect (tier review, referral awards), queued claimed to run inline after commit
    -- (handlers.core.tasks.queue), only when it can change something.
    IF ((p->>'referred')::boolean AND NOT EXISTS (
            SELECT 1 FROM purchase x WHERE x.member_id = v_member AND x.status = 'completed' AND x.id <> v_purchase))
       OR ((p->>'spend_to_reach' IS NOT NULL OR p->>'earned_to_reach' IS NOT NULL) AND EXISTS (
            SELECT 1 FROM memberbot_tier_window(v_merchant, v_member, (p->>'window_since')::timestamptz) w
             WHERE w.spend >= (p->>'spend_to_reach')::bigint OR GREATEST(w.earned, 0) >= (p->>'earned_to_reach')::bigint))
    THEN
        INSERT INTO task (merchant_id, kind, key, payload, status, attempts, run_after, lease_until, last_error,
                          created_at)
        VALUES (v_merchant, 'purchase.completed', 'purchase:' || v_purchase,
                p->'after_payload' || jsonb_build_object('purchase_id', v_purchase), 'running', 0,
                (p->>'queued_at')::timestamptz, (p->>'lease_until')::timestamptz, '', (p->>'queued_at')::timestamptz)
        ON CONFLICT (kind, key) DO NOTHING
        RETURNING id INTO v_after;
    END IF;
    RETURN QUERY SELECT 'done'::text, v_purchase, v_balance, v_result, v_after, v_notice;
END
$$;
"""

DROP = r"""
DROP FUNCTION IF EXISTS memberbot_till_purchase(jsonb);
DROP FUNCTION IF EXISTS memberbot_tier_window(integer, bigint, timestamptz);
"""


async def create(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(FUNCTIONS)  # type: ignore[attr-defined]


async def drop(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(DROP)  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [("models", "0016_wechat_menu")]

    initial = False

    operations = [ops.RunPython(create, drop)]
