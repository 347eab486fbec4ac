"""Credit (信用额度 / 赊账): the member's credit account, its append-only ledger and its one writer.

- `credit_account` (one per member: limit, owed balance; CHECK 0 ≤ owed ≤ limit) and `credit_entry`
  (charge | repay | limit_change | reversal; append-only: a trigger refuses UPDATE and DELETE; a unique
  idempotency key per merchant; `due_at` on charges), `merchant.credit_overdue_days` (default 30).
- `memberbot_credit_account(merchant, member)`: the member's account row, locked FOR UPDATE, opened
  (limit 0) if missing; no row for a member of another merchant.
- `memberbot_credit_post(...)`: one entry and the account (the building block): refuses an owed balance
  below zero, a charge above the limit, a limit below what is owed; a used key writes nothing.
- `memberbot_credit_set_limit`, `_charge`, `_repay`, `_reverse`: the ledger's operations, each taking
  the account lock first, replaying a used key, and answering an outcome instead of raising for what the
  caller may be refused (`below_owed`, `over_limit`, `over_owed`, ...).
- `memberbot_till_purchase` (0017) replaced: `credit_fen` of the purchase is charged in the same call,
  the credit account locked after the stored-value one (lock order: points account, pool, coupon,
  stored value, credit), and a purchase that would exceed the limit answers `credit_over_limit` before
  it writes anything.
"""

import importlib
from typing import Any

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

from models.credit import CreditKind


class AddColumn(ops.AddField):
    """AddField whose column gets a database default, so the merchants that exist already get it too."""

    def __init__(self, model_name: str, name: str, field: Any, sql: str) -> None:
        super().__init__(model_name, name, field)
        self.sql = sql

    async def database_forward(self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None) -> None:
        if state_editor:
            await state_editor.client.execute_script(self.sql)


CREDIT = r"""
ALTER TABLE credit_account ADD CONSTRAINT credit_account_within_limit
    CHECK (limit_fen >= 0 AND balance_fen >= 0 AND balance_fen <= limit_fen);

CREATE OR REPLACE FUNCTION memberbot_credit_account(p_merchant integer, p_member bigint)
RETURNS SETOF credit_account LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT * FROM credit_account a
     WHERE a.member_id = p_member AND a.merchant_id = p_merchant FOR UPDATE;
    IF FOUND THEN
        RETURN;
    END IF;
    INSERT INTO credit_account (merchant_id, member_id, limit_fen, balance_fen, updated_at)
    SELECT m.merchant_id, m.id, 0, 0, clock_timestamp()
      FROM member m WHERE m.id = p_member AND m.merchant_id = p_merchant
    ON CONFLICT (member_id) DO NOTHING;
    RETURN QUERY SELECT * FROM credit_account a
     WHERE a.member_id = p_member AND a.merchant_id = p_merchant FOR UPDATE;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_credit_post(
    p_account integer, p_kind text, p_amount bigint, p_limit bigint, p_key text, p_purchase bigint,
    p_staff integer, p_store integer, p_actor text, p_reason text, p_reverses bigint, p_due_at timestamptz,
    p_now timestamptz
) RETURNS SETOF credit_entry LANGUAGE plpgsql AS $$
DECLARE
    v_account credit_account;
    v_entry credit_entry;
    v_balance bigint;
    v_limit bigint;
BEGIN
    SELECT * INTO STRICT v_account FROM credit_account WHERE id = p_account FOR UPDATE;
    v_balance := v_account.balance_fen + p_amount;
    v_limit := COALESCE(p_limit, v_account.limit_fen);
    IF v_balance < 0 OR v_limit < 0 OR v_balance > v_limit
       OR (p_kind = 'charge' AND p_amount <= 0) OR (p_kind IN ('repay', 'reversal') AND p_amount > 0)
       OR (p_kind = 'limit_change' AND p_amount <> 0) THEN
        RAISE EXCEPTION 'credit posting % (%: %, limit %) refused on account % (owed %)',
            p_key, p_kind, p_amount, v_limit, p_account, v_account.balance_fen USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO credit_entry (merchant_id, member_id, kind, amount_fen, balance_after, limit_after, purchase_id,
                              staff_id, store_id, idempotency_key, due_at, reverses_id, actor, reason, created_at)
    VALUES (v_account.merchant_id, v_account.member_id, p_kind, p_amount, v_balance, v_limit, p_purchase,
            p_staff, p_store, p_key, p_due_at, p_reverses, left(p_actor, 32), left(p_reason, 255), p_now)
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING * INTO v_entry;
    IF v_entry.id IS NULL THEN
        RETURN;
    END IF;
    UPDATE credit_account SET balance_fen = v_balance, limit_fen = v_limit, updated_at = clock_timestamp()
     WHERE id = p_account;
    RETURN NEXT v_entry;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_credit_set_limit(
    p_merchant integer, p_member bigint, p_limit bigint, p_key text, p_staff integer, p_actor text,
    p_reason text, p_now timestamptz
) RETURNS TABLE (outcome text, entry_id bigint, balance_fen bigint, limit_fen bigint, previous_limit bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_account credit_account;
    v_found bigint;
BEGIN
    SELECT * INTO v_account FROM memberbot_credit_account(p_merchant, p_member);
    IF v_account.id IS NULL THEN
        RETURN QUERY SELECT 'no_member'::text, NULL::bigint, 0::bigint, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    SELECT e.id INTO v_found FROM credit_entry e WHERE e.merchant_id = p_merchant AND e.idempotency_key = p_key;
    IF v_found IS NOT NULL THEN
        RETURN QUERY SELECT 'replay'::text, v_found, v_account.balance_fen, v_account.limit_fen, v_account.limit_fen;
        RETURN;
    END IF;
    IF p_limit < v_account.balance_fen THEN
        RETURN QUERY SELECT 'below_owed'::text, NULL::bigint, v_account.balance_fen, v_account.limit_fen,
                            v_account.limit_fen;
        RETURN;
    END IF;
    IF p_limit = v_account.limit_fen THEN
        RETURN QUERY SELECT 'unchanged'::text, NULL::bigint, v_account.balance_fen, v_account.limit_fen,
                            v_account.limit_fen;
        RETURN;
    END IF;
    SELECT e.id INTO v_found FROM memberbot_credit_post(
        v_account.id, 'limit_change', 0, p_limit, p_key, NULL, p_staff, NULL, p_actor, p_reason, NULL, NULL,
        p_now) e;
    RETURN QUERY SELECT 'done'::text, v_found, v_account.balance_fen, p_limit, v_account.limit_fen;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_credit_charge(
    p_merchant integer, p_member bigint, p_amount bigint, p_key text, p_purchase bigint, p_staff integer,
    p_store integer, p_actor text, p_reason text, p_due_at timestamptz, p_now timestamptz
) RETURNS TABLE (outcome text, entry_id bigint, balance_fen bigint, limit_fen bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_account credit_account;
    v_found bigint;
BEGIN
    SELECT * INTO v_account FROM memberbot_credit_account(p_merchant, p_member);
    IF v_account.id IS NULL THEN
        RETURN QUERY SELECT 'no_member'::text, NULL::bigint, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    SELECT e.id INTO v_found FROM credit_entry e WHERE e.merchant_id = p_merchant AND e.idempotency_key = p_key;
    IF v_found IS NOT NULL THEN
        RETURN QUERY SELECT 'replay'::text, v_found, v_account.balance_fen, v_account.limit_fen;
        RETURN;
    END IF;
    IF v_account.balance_fen + p_amount > v_account.limit_fen THEN
        RETURN QUERY SELECT 'over_limit'::text, NULL::bigint, v_account.balance_fen, v_account.limit_fen;
        RETURN;
    END IF;
    SELECT e.id INTO v_found FROM memberbot_credit_post(
        v_account.id, 'charge', p_amount, NULL, p_key, p_purchase, p_staff, p_store, p_actor, p_reason, NULL,
        p_due_at, p_now) e;
    RETURN QUERY SELECT 'done'::text, v_found, v_account.balance_fen + p_amount, v_account.limit_fen;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_credit_repay(
    p_merchant integer, p_member bigint, p_amount bigint, p_key text, p_staff integer, p_store integer,
    p_actor text, p_reason text, p_now timestamptz
) RETURNS TABLE (outcome text, entry_id bigint, balance_fen bigint, limit_fen bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_account credit_account;
    v_found bigint;
BEGIN
    SELECT * INTO v_account FROM memberbot_credit_account(p_merchant, p_member);
    IF v_account.id IS NULL THEN
        RETURN QUERY SELECT 'no_member'::text, NULL::bigint, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    SELECT e.id INTO v_found FROM credit_entry e WHERE e.merchant_id = p_merchant AND e.idempotency_key = p_key;
    IF v_found IS NOT NULL THEN
        RETURN QUERY SELECT 'replay'::text, v_found, v_account.balance_fen, v_account.limit_fen;
        RETURN;
    END IF;
    IF p_amount > v_account.balance_fen THEN
        RETURN QUERY SELECT 'over_owed'::text, NULL::bigint, v_account.balance_fen, v_account.limit_fen;
        RETURN;
    END IF;
    SELECT e.id INTO v_found FROM memberbot_credit_post(
        v_account.id, 'repay', -p_amount, NULL, p_key, NULL, p_staff, p_store, p_actor, p_reason, NULL, NULL,
        p_now) e;
    RETURN QUERY SELECT 'done'::text, v_found, v_account.balance_fen - p_amount, v_account.limit_fen;
END
$$;

-- A refunded purchase's charge taken back: what is still owed of it (at most the balance; what the member
-- already repaid of it comes back to them in cash, the caller reports how much).
CREATE OR REPLACE FUNCTION memberbot_credit_reverse(
    p_merchant integer, p_charge_key text, p_key text, p_staff integer, p_actor text, p_reason text,
    p_now timestamptz
) RETURNS TABLE (outcome text, entry_id bigint, charged_fen bigint, reversed_fen bigint, balance_fen bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_charge credit_entry;
    v_account credit_account;
    v_found credit_entry;
    v_amount bigint;
BEGIN
    SELECT * INTO v_charge FROM credit_entry e
     WHERE e.merchant_id = p_merchant AND e.idempotency_key = p_charge_key AND e.kind = 'charge';
    IF v_charge.id IS NULL THEN
        RETURN QUERY SELECT 'no_charge'::text, NULL::bigint, 0::bigint, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    SELECT * INTO v_account FROM memberbot_credit_account(p_merchant, v_charge.member_id);
    SELECT * INTO v_found FROM credit_entry e WHERE e.merchant_id = p_merchant AND e.idempotency_key = p_key;
    IF v_found.id IS NOT NULL THEN
        RETURN QUERY SELECT 'replay'::text, v_found.id, v_charge.amount_fen, -v_found.amount_fen,
                            v_account.balance_fen;
        RETURN;
    END IF;
    v_amount := LEAST(v_charge.amount_fen, v_account.balance_fen);
    SELECT * INTO v_found FROM memberbot_credit_post(
        v_account.id, 'reversal', -v_amount, NULL, p_key, v_charge.purchase_id, p_staff, v_charge.store_id,
        p_actor, p_reason, v_charge.id, NULL, p_now) e;
    RETURN QUERY SELECT 'done'::text, v_found.id, v_charge.amount_fen, v_amount, v_account.balance_fen - v_amount;
END
$$;

DROP TRIGGER IF EXISTS credit_entry_append_only ON credit_entry;
CREATE TRIGGER credit_entry_append_only BEFORE UPDATE OR DELETE ON credit_entry
    FOR EACH ROW EXECUTE FUNCTION memberbot_append_only();
"""

TILL_PURCHASE = r"""
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
    v_credit_fen bigint := COALESCE((p->>'credit_fen')::bigint, 0);
    v_credit credit_account;
    v_charge text;
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

    IF v_credit_fen > 0 THEN
        SELECT * INTO v_credit FROM memberbot_credit_account(v_merchant, v_member);
        IF v_credit.balance_fen + v_credit_fen > v_credit.limit_fen THEN
            RETURN QUERY SELECT 'credit_over_limit'::text, NULL::bigint, 0, NULL::jsonb, NULL::bigint, NULL::bigint;
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
    IF v_credit_fen > 0 THEN
        SELECT c.outcome INTO v_charge FROM memberbot_credit_charge(
            v_merchant, v_member, v_credit_fen, p->>'credit_key', v_purchase, (p->>'staff_id')::integer,
            (p->>'store_id')::integer, v_actor, p->>'credit_reason', (p->>'credit_due_at')::timestamptz, v_now) c;
        IF v_charge IS DISTINCT FROM 'done' THEN  -- checked under the lock above: only a reused key gets here
            RAISE EXCEPTION 'purchase %: credit key already used', v_key USING ERRCODE = 'unique_violation';
        END IF;
    END IF;
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
DROP TRIGGER IF EXISTS credit_entry_append_only ON credit_entry;
DROP FUNCTION IF EXISTS memberbot_credit_reverse(integer, text, text, integer, text, text, timestamptz);
DROP FUNCTION IF EXISTS memberbot_credit_repay(integer, bigint, bigint, text, integer, integer, text, text,
                                               timestamptz);
DROP FUNCTION IF EXISTS memberbot_credit_charge(integer, bigint, bigint, text, bigint, integer, integer, text,
                                                text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS memberbot_credit_set_limit(integer, bigint, bigint, text, integer, text, text,
                                                   timestamptz);
DROP FUNCTION IF EXISTS memberbot_credit_post(integer, text, bigint, bigint, text, bigint, integer, integer, text,
                                              text, bigint, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS memberbot_credit_account(integer, bigint);
"""


async def create(apps: object, schema_editor: object) -> None:
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(CREDIT)
    await client.execute_script(TILL_PURCHASE)


async def drop(apps: object, schema_editor: object) -> None:
    previous = importlib.import_module("migrations.0017_hot_paths")
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(previous.FUNCTIONS)
    await client.execute_script(DROP)


class Migration(migrations.Migration):
    dependencies = [("models", "0018_members_backoffice")]

    initial = False

    operations = [
        ops.CreateModel(
            name='CreditAccount',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.OneToOneField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='credit', on_delete=OnDelete.RESTRICT)),
                ('limit_fen', fields.BigIntField(default=0)),
                ('balance_fen', fields.BigIntField(default=0)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'credit_account', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CreditEntry',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='credit_entries', on_delete=OnDelete.RESTRICT)),
                ('kind', fields.CharEnumField(description='CHARGE: charge\nREPAY: repay\nLIMIT_CHANGE: limit_change\nREVERSAL: reversal', enum_type=CreditKind, max_length=12)),
                ('amount_fen', fields.BigIntField()),
                ('balance_after', fields.BigIntField()),
                ('limit_after', fields.BigIntField()),
                ('purchase', fields.ForeignKeyField('models.Purchase', source_field='purchase_id', null=True, db_constraint=True, to_field='id', related_name='credit_entries', on_delete=OnDelete.RESTRICT)),
                ('staff', fields.ForeignKeyField('models.Staff', source_field='staff_id', null=True, db_constraint=True, to_field='id', related_name='credit_entries', on_delete=OnDelete.RESTRICT)),
                ('store', fields.ForeignKeyField('models.Store', source_field='store_id', null=True, db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('idempotency_key', fields.CharField(max_length=128)),
                ('due_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('reverses', fields.ForeignKeyField('models.CreditEntry', source_field='reverses_id', null=True, db_constraint=True, to_field='id', related_name='reversals', on_delete=OnDelete.RESTRICT)),
                ('actor', fields.CharField(default='system', max_length=32)),
                ('reason', fields.CharField(default='', max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'credit_entry', 'app': 'models', 'unique_together': (('merchant', 'idempotency_key'),), 'indexes': [Index(fields=['member_id', 'id']), Index(fields=['merchant_id', 'kind', 'due_at'])], 'pk_attr': 'id', 'table_description': 'One append-only row per change (a trigger refuses UPDATE and DELETE).'},
            bases=['Model'],
        ),
        AddColumn(
            'Merchant', 'credit_overdue_days', fields.IntField(default=30),
            "ALTER TABLE merchant ADD COLUMN credit_overdue_days INTEGER NOT NULL DEFAULT 30",
        ),
        ops.RunPython(create, drop),
    ]
