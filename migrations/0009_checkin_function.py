"""PostgreSQL: the daily check-in as one server-side function (one round trip instead of six).

`memberbot_check_in` finds the member (by id, or by Official Account openid), locks their points
account (opening it if missing), and — reading under that lock, so every check-in and make-up
committed before is seen — writes today's check-in and its ledger posting, balance and lot exactly
as `handlers.points.credit_locked` does. The points a streak earns come from the caller as a table
(`handlers.rules.checkin.points_table`): the rules stay in Python. SQLite keeps the Python path
(`handlers.checkin`), so this migration does nothing there.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

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
    v_account integer;
    v_balance integer;
    v_today integer;
    v_prev integer;
    v_streak integer;
    v_points integer;
    v_key text;
    v_txn bigint;
    v_now timestamptz := clock_timestamp();
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
    SELECT a.id, a.balance INTO v_account, v_balance
      FROM points_account a WHERE a.member_id = v_member FOR UPDATE;
    IF v_account IS NULL THEN
        INSERT INTO points_account (merchant_id, member_id, balance, pending, lifetime_earned, updated_at)
        VALUES (p_merchant, v_member, 0, 0, 0, v_now) ON CONFLICT DO NOTHING;
        SELECT a.id, a.balance INTO v_account, v_balance
          FROM points_account a WHERE a.member_id = v_member FOR UPDATE;
    END IF;
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
    VALUES (p_merchant, v_member, p_day, FALSE, v_streak, v_points, v_now);
    IF v_points > 0 THEN
        v_key := 'checkin:' || v_member || ':' || to_char(p_day, 'YYYY-MM-DD');
        INSERT INTO points_transaction (merchant_id, member_id, delta, kind, idempotency_key, reference,
                                        balance_after, actor, reason, created_at)
        VALUES (p_merchant, v_member, v_points, 'earn_checkin', v_key, to_char(p_day, 'YYYY-MM-DD'),
                v_balance + v_points, 'member', p_reason, v_now)
        RETURNING id INTO v_txn;
        UPDATE points_account SET balance = balance + v_points, lifetime_earned = lifetime_earned + v_points,
                                  updated_at = v_now
         WHERE id = v_account;
        -- A credit first repays any claw-back debt; only the rest fills the lot.
        INSERT INTO points_lot (merchant_id, member_id, source_id, source_key, amount, remaining, status,
                                earned_at, expires_at)
        VALUES (p_merchant, v_member, v_txn, v_key, v_points,
                CASE WHEN v_balance >= 0 THEN v_points WHEN v_balance + v_points > 0 THEN v_balance + v_points
                     ELSE 0 END,
                'available', p_earned_at, p_expires);
        v_balance := v_balance + v_points;
    END IF;
    RETURN QUERY SELECT 'done'::text, v_member, v_streak, v_points, v_balance;
END
$$;
"""


async def create_function(apps: object, schema_editor: object) -> None:
    client = schema_editor.client  # type: ignore[attr-defined]
    if client.capabilities.dialect == "postgres":
        await client.execute_script(CHECK_IN_FUNCTION)


async def drop_function(apps: object, schema_editor: object) -> None:
    client = schema_editor.client  # type: ignore[attr-defined]
    if client.capabilities.dialect == "postgres":
        await client.execute_script(
            "DROP FUNCTION IF EXISTS memberbot_check_in(integer, bigint, text, date, integer[], integer, integer,"
            " text, timestamptz, timestamptz)"
        )


class Migration(migrations.Migration):
    dependencies = [("models", "0008_member_unionid_unique")]

    initial = False

    operations = [ops.RunPython(create_function, drop_function)]
