"""The merchant's back office of members: search, staff notes, blocking.

- `member.store_id` (the acquiring store), `blocked_at` / `blocked_reason`, and two columns kept by
  triggers, never by Python: `last_visit_at` (the latest till purchase — refunded or not — or daily
  check-in; a make-up 补签 fills a past day and is no visit) and `lifetime_spend_fen` (Σ `paid_fen` of the
  completed, not refunded purchases). Both are backfilled here from the rows that exist.
- Indexes for the directory's filters and keyset sorts: the name by prefix (`lower(name)`,
  text_pattern_ops) and by fragment (pg_trgm), the last visit with never-visited members last.
- `member_note`: append-only (UPDATE refused; DELETE only of an anonymised member's notes, which the
  retention run erases).
- `memberbot_check_in` (0010) answers `blocked` for a blocked member, before it locks or writes anything.
"""

import importlib
from typing import Any

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class AddColumn(ops.AddField):
    """AddField whose column gets a database default, so the members that exist already get it too."""

    def __init__(self, model_name: str, name: str, field: Any, sql: str) -> None:
        super().__init__(model_name, name, field)
        self.sql = sql

    async def database_forward(self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None) -> None:
        if state_editor:
            await state_editor.client.execute_script(self.sql)


BACKOFFICE = r"""
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX IF NOT EXISTS member_name_prefix ON member (merchant_id, lower(name) text_pattern_ops);
CREATE INDEX IF NOT EXISTS member_name_trgm ON member USING gin (lower(name) gin_trgm_ops);
CREATE INDEX IF NOT EXISTS member_last_visit
    ON member (merchant_id, (COALESCE(last_visit_at, '-infinity'::timestamptz)), id);
CREATE INDEX IF NOT EXISTS member_blocked ON member (merchant_id, blocked_at) WHERE blocked_at IS NOT NULL;

-- Purchases: a new one is a visit and adds its cash to the lifetime spend; a refund takes it back.
CREATE OR REPLACE FUNCTION memberbot_purchase_member_stats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE member
           SET last_visit_at = GREATEST(last_visit_at, NEW.created_at),
               lifetime_spend_fen = lifetime_spend_fen
                   + CASE WHEN NEW.status = 'completed' THEN NEW.paid_fen ELSE 0 END
         WHERE id = NEW.member_id;
    ELSIF OLD.status = 'completed' THEN
        UPDATE member SET lifetime_spend_fen = lifetime_spend_fen - OLD.paid_fen WHERE id = NEW.member_id;
    ELSIF NEW.status = 'completed' THEN
        UPDATE member SET lifetime_spend_fen = lifetime_spend_fen + NEW.paid_fen WHERE id = NEW.member_id;
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS purchase_member_stats ON purchase;
CREATE TRIGGER purchase_member_stats AFTER INSERT ON purchase
    FOR EACH ROW EXECUTE FUNCTION memberbot_purchase_member_stats();
DROP TRIGGER IF EXISTS purchase_member_spend ON purchase;
CREATE TRIGGER purchase_member_spend AFTER UPDATE OF status ON purchase
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION memberbot_purchase_member_stats();

-- A daily check-in is a visit; a make-up is not.
CREATE OR REPLACE FUNCTION memberbot_checkin_member_visit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE member SET last_visit_at = GREATEST(last_visit_at, NEW.created_at) WHERE id = NEW.member_id;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS checkin_member_visit ON checkin;
CREATE TRIGGER checkin_member_visit AFTER INSERT ON checkin
    FOR EACH ROW WHEN (NOT NEW.makeup) EXECUTE FUNCTION memberbot_checkin_member_visit();

UPDATE member m SET last_visit_at = v.at
  FROM (SELECT member_id, max(at) AS at FROM (
          SELECT member_id, max(created_at) AS at FROM purchase GROUP BY member_id
          UNION ALL
          SELECT member_id, max(created_at) FROM checkin WHERE NOT makeup GROUP BY member_id
        ) visits GROUP BY member_id) v
 WHERE m.id = v.member_id;
UPDATE member m SET lifetime_spend_fen = s.fen
  FROM (SELECT member_id, sum(paid_fen) AS fen FROM purchase WHERE status = 'completed' GROUP BY member_id) s
 WHERE m.id = s.member_id;
-- The members brought in by staff until now: their staff's store (the best knowledge there is).
UPDATE member m SET store_id = s.store_id
  FROM staff s WHERE s.id = m.acquired_by_id AND m.store_id IS NULL AND s.store_id IS NOT NULL;

CREATE OR REPLACE FUNCTION memberbot_member_note_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM member WHERE id = OLD.member_id AND anonymized_at IS NOT NULL) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'member_note is append-only: DELETE refused' USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER IF EXISTS member_note_append_only ON member_note;
CREATE TRIGGER member_note_append_only BEFORE UPDATE ON member_note
    FOR EACH ROW EXECUTE FUNCTION memberbot_append_only();
DROP TRIGGER IF EXISTS member_note_delete ON member_note;
CREATE TRIGGER member_note_delete BEFORE DELETE ON member_note
    FOR EACH ROW EXECUTE FUNCTION memberbot_member_note_delete();
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
    v_blocked boolean;
    v_account points_account;
    v_today integer;
    v_prev integer;
    v_streak integer;
    v_points integer;
    v_balance integer;
BEGIN
    IF p_member IS NOT NULL THEN
        SELECT m.id, m.blocked_at IS NOT NULL INTO v_member, v_blocked
          FROM member m WHERE m.id = p_member AND m.merchant_id = p_merchant;
    ELSE
        SELECT m.id, m.blocked_at IS NOT NULL INTO v_member, v_blocked
          FROM member m WHERE m.merchant_id = p_merchant AND m.openid = p_openid;
    END IF;
    IF v_member IS NULL THEN
        RETURN QUERY SELECT 'no_member'::text, NULL::bigint, 0, 0, 0;
        RETURN;
    END IF;
    IF v_blocked THEN
        RETURN QUERY SELECT 'blocked'::text, v_member, 0, 0, 0;
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
DROP TRIGGER IF EXISTS member_note_delete ON member_note;
DROP TRIGGER IF EXISTS member_note_append_only ON member_note;
DROP FUNCTION IF EXISTS memberbot_member_note_delete();
DROP TRIGGER IF EXISTS checkin_member_visit ON checkin;
DROP FUNCTION IF EXISTS memberbot_checkin_member_visit();
DROP TRIGGER IF EXISTS purchase_member_spend ON purchase;
DROP TRIGGER IF EXISTS purchase_member_stats ON purchase;
DROP FUNCTION IF EXISTS memberbot_purchase_member_stats();
DROP INDEX IF EXISTS member_blocked;
DROP INDEX IF EXISTS member_last_visit;
DROP INDEX IF EXISTS member_name_trgm;
DROP INDEX IF EXISTS member_name_prefix;
"""


async def create(apps: object, schema_editor: object) -> None:
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(BACKOFFICE)
    await client.execute_script(CHECK_IN_FUNCTION)


async def drop(apps: object, schema_editor: object) -> None:
    previous = importlib.import_module("migrations.0010_ledger_writers")
    client = schema_editor.client  # type: ignore[attr-defined]
    await client.execute_script(previous.CHECK_IN_FUNCTION)
    await client.execute_script(DROP)


class Migration(migrations.Migration):
    dependencies = [('models', '0012_notices')]

    initial = False

    operations = [
        ops.CreateModel(
            name='MemberNote',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant', fields.ForeignKeyField('models.Merchant', source_field='merchant_id', db_constraint=True, to_field='id', on_delete=OnDelete.RESTRICT)),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='notes', on_delete=OnDelete.RESTRICT)),
                ('author', fields.ForeignKeyField('models.Staff', source_field='author_id', db_constraint=True, to_field='id', related_name='member_notes', on_delete=OnDelete.RESTRICT)),
                ('text', fields.CharField(max_length=1000)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'member_note', 'app': 'models', 'indexes': [Index(fields=['member_id', 'id'])], 'pk_attr': 'id', 'table_description': 'A dated note by staff about a member (联系记录). Append-only: a trigger refuses UPDATE, and DELETE'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Member',
            name='blocked_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        AddColumn(
            'Member', 'blocked_reason', fields.CharField(default='', max_length=200),
            "ALTER TABLE member ADD COLUMN blocked_reason VARCHAR(200) NOT NULL DEFAULT ''",
        ),
        ops.AddField(
            model_name='Member',
            name='last_visit_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        AddColumn(
            'Member', 'lifetime_spend_fen', fields.BigIntField(default=0),
            "ALTER TABLE member ADD COLUMN lifetime_spend_fen BIGINT NOT NULL DEFAULT 0",
        ),
        ops.AddField(
            model_name='Member',
            name='store',
            field=fields.ForeignKeyField('models.Store', source_field='store_id', null=True, db_constraint=True, to_field='id', related_name='members', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddIndex(
            model_name='Member',
            index=Index(fields=['merchant_id', 'registered_at', 'id']),
        ),
        ops.AddIndex(
            model_name='Member',
            index=Index(fields=['merchant_id', 'lifetime_spend_fen', 'id']),
        ),
        ops.AddIndex(
            model_name='Member',
            index=Index(fields=['merchant_id', 'store_id']),
        ),
        ops.AddIndex(
            model_name='MemberTier',
            index=Index(fields=['merchant_id', 'tier_code']),
        ),
        ops.RunPython(create, drop),
    ]
