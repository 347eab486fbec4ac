"""The one writer of each ledger: PostgreSQL functions, called by every path that moves points or money.

Points (`points_account`, `points_transaction`, `points_lot`, `points_draw`) are written only here:

- `memberbot_points_fill(balance_before, amount)`: how much of a credit fills lots; a negative balance
  (a claw-back debt) is repaid first. The formula lives here once.
- `memberbot_points_account(merchant, member)`: the member's account row, locked FOR UPDATE, opened
  if missing; no row for a member of another merchant.
- `memberbot_points_post(...)`: one append-only transaction and the account's balance (the building
  block of everything below); a used idempotency key writes nothing and returns no row.
- `memberbot_points_credit`, `_debit`, `_restore`, `_expire`, `_hold`, `_release`, `_void`: the
  ledger's operations. Python (`handlers.loyalty.ledger`) decides what to post — which lots a spend
  draws from, by the pure rule `allocate_spend` — and these functions write it.

Stored value (`wallet_account`, `wallet_transaction`) is written only by `memberbot_wallet_account` and
`memberbot_wallet_post`, which refuses to take principal or bonus below zero.

Both transaction tables become append-only: a trigger refuses UPDATE and DELETE of their rows.
`memberbot_check_in` (migration 0009) is replaced to post through `memberbot_points_credit`.
"""

import importlib

from tortoise import migrations
from tortoise.migrations import operations as ops

LEDGER_FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION memberbot_points_fill(p_balance_before integer, p_amount integer)
RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT p_amount - LEAST(p_amount, GREATEST(-p_balance_before, 0))
$$;

CREATE OR REPLACE FUNCTION memberbot_points_account(p_merchant integer, p_member bigint)
RETURNS SETOF points_account LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT * FROM points_account a
     WHERE a.member_id = p_member AND a.merchant_id = p_merchant FOR UPDATE;
    IF FOUND THEN
        RETURN;
    END IF;
    INSERT INTO points_account (merchant_id, member_id, balance, pending, lifetime_earned, updated_at)
    SELECT m.merchant_id, m.id, 0, 0, 0, clock_timestamp()
      FROM member m WHERE m.id = p_member AND m.merchant_id = p_merchant
    ON CONFLICT (member_id) DO NOTHING;
    RETURN QUERY SELECT * FROM points_account a
     WHERE a.member_id = p_member AND a.merchant_id = p_merchant FOR UPDATE;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_points_post(
    p_account integer, p_delta integer, p_kind text, p_key text, p_reference text, p_actor text,
    p_reason text, p_reverses bigint, p_earning boolean, p_pending_delta integer
) RETURNS TABLE (transaction_id bigint, balance_before integer, balance_after integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_account points_account;
    v_txn bigint;
    v_now timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO STRICT v_account FROM points_account WHERE id = p_account FOR UPDATE;
    IF v_account.balance + p_delta < 0 AND p_delta < 0 AND p_kind <> 'reverse' THEN
        RAISE EXCEPTION 'points posting % would take account % below zero', p_key, p_account
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO points_transaction (merchant_id, member_id, delta, kind, idempotency_key, reference,
                                    balance_after, actor, reason, reverses_id, created_at)
    VALUES (v_account.merchant_id, v_account.member_id, p_delta, p_kind, p_key, left(p_reference, 64),
            v_account.balance + p_delta, left(p_actor, 32), left(p_reason, 255), p_reverses, v_now)
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING id INTO v_txn;
    IF v_txn IS NULL THEN
        RETURN;  -- the key was used before: nothing written, the caller replays
    END IF;
    UPDATE points_account
       SET balance = balance + p_delta,
           lifetime_earned = lifetime_earned + CASE WHEN p_earning AND p_delta > 0 THEN p_delta ELSE 0 END,
           pending = pending + p_pending_delta,
           updated_at = v_now
     WHERE id = p_account;
    RETURN QUERY SELECT v_txn, v_account.balance, v_account.balance + p_delta;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_points_credit(
    p_account integer, p_amount integer, p_kind text, p_key text, p_reference text, p_actor text,
    p_reason text, p_earned_at timestamptz, p_expires_at timestamptz
) RETURNS TABLE (transaction_id bigint, balance_after integer)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    SELECT * INTO v FROM memberbot_points_post(
        p_account, p_amount, p_kind, p_key, p_reference, p_actor, p_reason, NULL, true, 0);
    IF v.transaction_id IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO points_lot (merchant_id, member_id, source_id, source_key, amount, remaining, status,
                            earned_at, expires_at)
    SELECT a.merchant_id, a.member_id, v.transaction_id, p_key, p_amount,
           memberbot_points_fill(v.balance_before, p_amount), 'available', p_earned_at, p_expires_at
      FROM points_account a WHERE a.id = p_account;
    RETURN QUERY SELECT v.transaction_id, v.balance_after;
END
$$;

-- Draws `p_takes[i]` from lot `p_lots[i]` (all the member's, each at most its remaining) and records
-- the draws; `p_amount` may exceed their sum only for a claw-back (`p_reverses` set), the rest a debt.
CREATE OR REPLACE FUNCTION memberbot_points_debit(
    p_account integer, p_amount integer, p_kind text, p_key text, p_reference text, p_actor text,
    p_reason text, p_reverses bigint, p_lots bigint[], p_takes integer[]
) RETURNS TABLE (transaction_id bigint, balance_after integer)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_member integer;
    v_taken integer;
    v_changed integer;
BEGIN
    SELECT COALESCE(sum(t), 0) INTO v_taken FROM unnest(p_takes) AS t;
    IF cardinality(p_lots) <> cardinality(p_takes) OR v_taken > p_amount
       OR (v_taken < p_amount AND p_reverses IS NULL) OR EXISTS (SELECT 1 FROM unnest(p_takes) t WHERE t <= 0) THEN
        RAISE EXCEPTION 'points debit %: draws % do not cover %', p_key, p_takes, p_amount
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT * INTO v FROM memberbot_points_post(
        p_account, -p_amount, p_kind, p_key, p_reference, p_actor, p_reason, p_reverses, false, 0);
    IF v.transaction_id IS NULL THEN
        RETURN;
    END IF;
    SELECT member_id INTO v_member FROM points_account WHERE id = p_account;
    UPDATE points_lot l SET remaining = l.remaining - d.take
      FROM unnest(p_lots, p_takes) AS d(lot_id, take)
     WHERE l.id = d.lot_id AND l.member_id = v_member AND l.status = 'available' AND l.remaining >= d.take;
    GET DIAGNOSTICS v_changed = ROW_COUNT;
    IF v_changed <> cardinality(p_lots) THEN
        RAISE EXCEPTION 'points debit %: a lot is not the member''s or holds too little', p_key
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO points_draw (transaction_id, lot_id, amount)
    SELECT v.transaction_id, d.lot_id, d.take FROM unnest(p_lots, p_takes) WITH ORDINALITY AS d(lot_id, take, n)
     ORDER BY d.n;
    RETURN QUERY SELECT v.transaction_id, v.balance_after;
END
$$;

-- A spend given back: `p_amount` returns to the lots it drew from (`p_lots`/`p_gives`, in draw order),
-- after the credit has repaid any debt (the first draws give back the part that repaid it).
CREATE OR REPLACE FUNCTION memberbot_points_restore(
    p_account integer, p_amount integer, p_key text, p_reference text, p_actor text, p_reason text,
    p_reverses bigint, p_lots bigint[], p_gives integer[]
) RETURNS TABLE (transaction_id bigint, balance_after integer)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_debt integer;
    v_repay integer;
    i integer;
BEGIN
    SELECT * INTO v FROM memberbot_points_post(
        p_account, p_amount, 'reverse', p_key, p_reference, p_actor, p_reason, p_reverses, false, 0);
    IF v.transaction_id IS NULL THEN
        RETURN;
    END IF;
    v_debt := p_amount - memberbot_points_fill(v.balance_before, p_amount);
    FOR i IN 1 .. COALESCE(cardinality(p_lots), 0) LOOP
        v_repay := LEAST(v_debt, p_gives[i]);
        v_debt := v_debt - v_repay;
        IF p_gives[i] > v_repay THEN
            UPDATE points_lot SET remaining = remaining + p_gives[i] - v_repay WHERE id = p_lots[i];
        END IF;
    END LOOP;
    RETURN QUERY SELECT v.transaction_id, v.balance_after;
END
$$;

-- Every lot of the account's member lapsed at `p_now` expires into one `expire` posting; its key is
-- unique per posting (the member's latest transaction id changes with every posting).
CREATE OR REPLACE FUNCTION memberbot_points_expire(p_account integer, p_now timestamptz)
RETURNS TABLE (transaction_id bigint, balance_after integer, amount integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_member integer;
    v_lots bigint[];
    v_takes integer[];
    v_total integer;
    v_latest bigint;
BEGIN
    SELECT member_id INTO v_member FROM points_account WHERE id = p_account FOR UPDATE;
    SELECT array_agg(l.id ORDER BY l.id), array_agg(l.remaining ORDER BY l.id), sum(l.remaining)
      INTO v_lots, v_takes, v_total
      FROM points_lot l
     WHERE l.member_id = v_member AND l.status = 'available' AND l.remaining > 0 AND l.expires_at <= p_now;
    IF v_total IS NULL THEN
        RETURN;
    END IF;
    SELECT max(t.id) INTO v_latest FROM points_transaction t WHERE t.member_id = v_member;
    RETURN QUERY SELECT d.transaction_id, d.balance_after, v_total::integer FROM memberbot_points_debit(
        p_account, v_total::integer, 'expire', 'expire:' || v_member || ':after:' || COALESCE(v_latest, 0),
        '', 'system', '积分到期', NULL, v_lots, v_takes) d;
END
$$;

-- Purchase points held until the refund window passes: a pending lot, no posting yet. Returns the lot.
CREATE OR REPLACE FUNCTION memberbot_points_hold(
    p_account integer, p_amount integer, p_key text, p_earned_at timestamptz, p_available_at timestamptz,
    p_expires_at timestamptz
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_lot bigint;
BEGIN
    INSERT INTO points_lot (merchant_id, member_id, source_key, amount, remaining, status, earned_at,
                            available_at, expires_at)
    SELECT a.merchant_id, a.member_id, p_key, p_amount, p_amount, 'pending', p_earned_at, p_available_at,
           p_expires_at
      FROM points_account a WHERE a.id = p_account FOR UPDATE
    ON CONFLICT (merchant_id, source_key) DO NOTHING
    RETURNING id INTO v_lot;
    IF v_lot IS NULL THEN
        SELECT l.id INTO v_lot FROM points_lot l JOIN points_account a ON a.merchant_id = l.merchant_id
         WHERE a.id = p_account AND l.source_key = p_key;
        RETURN v_lot;
    END IF;
    UPDATE points_account SET pending = pending + p_amount, updated_at = clock_timestamp()
     WHERE id = p_account;
    RETURN v_lot;
END
$$;

-- A pending lot whose window passed becomes available points: one earn posting keyed by the lot.
CREATE OR REPLACE FUNCTION memberbot_points_release(p_account integer, p_lot bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_lot points_lot;
    v record;
BEGIN
    SELECT l.* INTO v_lot FROM points_lot l JOIN points_account a ON a.member_id = l.member_id
     WHERE l.id = p_lot AND a.id = p_account FOR UPDATE OF l;
    IF v_lot.id IS NULL OR v_lot.status <> 'pending' THEN
        RETURN false;
    END IF;
    SELECT * INTO v FROM memberbot_points_post(
        p_account, v_lot.amount, 'earn_purchase', v_lot.source_key, left(v_lot.source_key, 64), 'system',
        '待生效积分到账', NULL, true, -v_lot.amount);
    IF v.transaction_id IS NULL THEN
        RETURN false;
    END IF;
    UPDATE points_lot SET status = 'available', source_id = v.transaction_id,
                          remaining = memberbot_points_fill(v.balance_before, v_lot.amount)
     WHERE id = p_lot;
    RETURN true;
END
$$;

-- Pending points voided inside the refund window; false if they were released or voided already.
CREATE OR REPLACE FUNCTION memberbot_points_void(p_account integer, p_key text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_lot points_lot;
BEGIN
    SELECT l.* INTO v_lot FROM points_lot l JOIN points_account a ON a.member_id = l.member_id
     WHERE a.id = p_account AND l.merchant_id = a.merchant_id AND l.source_key = p_key FOR UPDATE OF l;
    IF v_lot.id IS NULL OR v_lot.status <> 'pending' THEN
        RETURN false;
    END IF;
    UPDATE points_lot SET status = 'voided', remaining = 0 WHERE id = v_lot.id;
    UPDATE points_account SET pending = pending - v_lot.amount, updated_at = clock_timestamp()
     WHERE id = p_account;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_wallet_account(p_merchant integer, p_member bigint)
RETURNS SETOF wallet_account LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT * FROM wallet_account a
     WHERE a.member_id = p_member AND a.merchant_id = p_merchant FOR UPDATE;
    IF FOUND THEN
        RETURN;
    END IF;
    INSERT INTO wallet_account (merchant_id, member_id, principal_fen, bonus_fen, lifetime_top_up_fen,
                                updated_at)
    SELECT m.merchant_id, m.id, 0, 0, 0, clock_timestamp()
      FROM member m WHERE m.id = p_member AND m.merchant_id = p_merchant
    ON CONFLICT (member_id) DO NOTHING;
    RETURN QUERY SELECT * FROM wallet_account a
     WHERE a.member_id = p_member AND a.merchant_id = p_merchant FOR UPDATE;
END
$$;

-- One stored-value posting: never below zero in principal or bonus (SQLSTATE 23514 otherwise); a used
-- key writes nothing and returns no row.
CREATE OR REPLACE FUNCTION memberbot_wallet_post(
    p_account integer, p_kind text, p_principal bigint, p_bonus bigint, p_key text, p_reference text,
    p_actor text, p_reason text, p_reverses bigint, p_created_at timestamptz
) RETURNS SETOF wallet_transaction LANGUAGE plpgsql AS $$
DECLARE
    v_account wallet_account;
    v_txn wallet_transaction;
BEGIN
    SELECT * INTO STRICT v_account FROM wallet_account WHERE id = p_account FOR UPDATE;
    IF v_account.principal_fen + p_principal < 0 OR v_account.bonus_fen + p_bonus < 0 THEN
        RAISE EXCEPTION 'stored-value posting % would take account % below zero', p_key, p_account
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO wallet_transaction (merchant_id, member_id, kind, principal_delta, bonus_delta,
                                    principal_after, bonus_after, idempotency_key, reference, actor,
                                    reason, reverses_id, created_at)
    VALUES (v_account.merchant_id, v_account.member_id, p_kind, p_principal, p_bonus,
            v_account.principal_fen + p_principal, v_account.bonus_fen + p_bonus, p_key,
            left(p_reference, 64), left(p_actor, 32), left(p_reason, 255), p_reverses, p_created_at)
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING * INTO v_txn;
    IF v_txn.id IS NULL THEN
        RETURN;
    END IF;
    UPDATE wallet_account
       SET principal_fen = principal_fen + p_principal,
           bonus_fen = bonus_fen + p_bonus,
           lifetime_top_up_fen = lifetime_top_up_fen + CASE WHEN p_kind = 'top_up' THEN p_principal ELSE 0 END,
           updated_at = clock_timestamp()
     WHERE id = p_account;
    RETURN NEXT v_txn;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER IF EXISTS points_transaction_append_only ON points_transaction;
CREATE TRIGGER points_transaction_append_only BEFORE UPDATE OR DELETE ON points_transaction
    FOR EACH ROW EXECUTE FUNCTION memberbot_append_only();
DROP TRIGGER IF EXISTS wallet_transaction_append_only ON wallet_transaction;
CREATE TRIGGER wallet_transaction_append_only BEFORE UPDATE OR DELETE ON wallet_transaction
    FOR EACH ROW EXECUTE FUNCTION memberbot_append_only();
"""

CHECK_IN_FUNCTION = r"""
CREATE OR REPLACE FUNCTION memberbot_check_in(
    p_merchant integer, p_member bigint, p_openid text, p_day date,
    p_table integer[], p_cycle integer, p_daily integer,
    p_reason text, p_earned_at timestamptz, p_expires timestamptz
) RETURNS TABLE (outcome text, member_id bigint, streak integer, points integer, balance integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_member bigint;
    v_account points_account;
    v_today integer;
    v_prev integer;
    v_streak integer;
    v_points integer;
    v_balance integer;
BEGIN
    IF p_member IS NOT NULL THEN
        SELECT m.id INTO v_member FROM member m WHERE m.id = p_member AND m.merchant_id = p_merchant;
    ELSE
        SELECT m.id INTO v_member FROM member m WHERE m.merchant_id = p_merchant AND m.openid = p_openid;
    END IF;
    IF v_member IS NULL THEN
        RETURN QUERY SELECT 'no_member'::text, NULL::bigint, 0, 0, 0;
        RETURN;
    END IF;
    SELECT * INTO v_account FROM memberbot_points_account(p_merchant, v_member);
    v_balance := v_account.balance;
    -- Under the lock, each query of this (volatile) function sees everything committed before it.
    SELECT c.streak INTO v_today FROM checkin c WHERE c.member_id = v_member AND c.day = p_day;
    IF v_today IS NOT NULL THEN
        RETURN QUERY SELECT 'already'::text, v_member, v_today, 0, v_balance;
        RETURN;
    END IF;
    SELECT c.streak INTO v_prev FROM checkin c WHERE c.member_id = v_member AND c.day = p_day - 1;
    v_streak := COALESCE(v_prev, 0) + 1;
    IF p_cycle > 0 THEN
        v_points := p_table[(v_streak - 1) % p_cycle + 1];
    ELSIF v_streak <= COALESCE(array_length(p_table, 1), 0) THEN
        v_points := p_table[v_streak];
    ELSE
        v_points := p_daily;
    END IF;
    INSERT INTO checkin (merchant_id, member_id, day, makeup, streak, points, created_at)
    VALUES (p_merchant, v_member, p_day, FALSE, v_streak, v_points, clock_timestamp());
    IF v_points > 0 THEN
        SELECT c.balance_after INTO v_balance FROM memberbot_points_credit(
            v_account.id, v_points, 'earn_checkin', 'checkin:' || v_member || ':' || to_char(p_day, 'YYYY-MM-DD'),
            to_char(p_day, 'YYYY-MM-DD'), 'member', p_reason, p_earned_at, p_expires) c;
    END IF;
    RETURN QUERY SELECT 'done'::text, v_member, v_streak, v_points, v_balance;
END
$$;
"""

DROP = r"""
DROP TRIGGER IF EXISTS points_transaction_append_only ON points_transaction;
DROP TRIGGER IF EXISTS wallet_transaction_append_only ON wallet_transaction;
DROP FUNCTION IF EXISTS memberbot_append_only();
DROP FUNCTION IF EXISTS memberbot_wallet_post(integer, text, bigint, bigint, text, text, text, text, bigint,
                                              timestamptz);
DROP FUNCTION IF EXISTS memberbot_wallet_account(integer, bigint);
DROP FUNCTION IF EXISTS memberbot_points_void(integer, text);
DROP FUNCTION IF EXISTS memberbot_points_release(integer, bigint);
DROP FUNCTION IF EXISTS memberbot_points_hold(integer, integer, text, timestamptz, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS memberbot_points_expire(integer, timestamptz);
DROP FUNCTION IF EXISTS memberbot_points_restore(integer, integer, text, text, text, text, bigint, bigint[],
                                                 integer[]);
DROP FUNCTION IF EXISTS memberbot_points_debit(integer, integer, text, text, text, text, text, bigint, bigint[],
                                               integer[]);
DROP FUNCTION IF EXISTS memberbot_points_credit(integer, integer, text, text, text, text, text, timestamptz,
                                                timestamptz);
DROP FUNCTION IF EXISTS memberbot_points_post(integer, integer, text, text, text, text, text, bigint, boolean,
                                              integer);
DROP FUNCTION IF EXISTS memberbot_points_account(integer, bigint);
DROP FUNCTION IF EXISTS memberbot_points_fill(integer, integer);
"""


async def create(apps: object, schema_editor: object) -> None:
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(LEDGER_FUNCTIONS)
    await client.execute_script(CHECK_IN_FUNCTION)


async def drop(apps: object, schema_editor: object) -> None:
    previous = importlib.import_module("migrations.0009_checkin_function")
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(previous.CHECK_IN_FUNCTION)
    await client.execute_script(DROP)


class Migration(migrations.Migration):
    dependencies = [("models", "0009_checkin_function")]

    initial = False

    operations = [ops.RunPython(create, drop)]
