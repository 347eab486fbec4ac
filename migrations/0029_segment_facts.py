"""Segments (after 0028_analytics_rebuild_guard): `member_facts`, one narrow row per live member with only
what a segment expression tests, so a segment's count is one scan of ~110 bytes a member instead of the
whole member row joined with `member_tag` and `member_tier`.

- Columns: the member's merchant, gender, birthday, registration time and source, acquiring store and
  staff, subscribed, has a phone, blocked, last visit, lifetime spend (copied from `member`), its tier
  code (`member_tier`; NULL: the base tier) and `tags`, the ids of the tags it holds (`member_tag`),
  sorted (NULL: none — no bytes for an untagged member). Every byte counts: a count reads every row.
- Kept by triggers in the writing transaction, so a count is never stale: `member` INSERT (a statement
  trigger over the inserted rows) and UPDATE of a copied column (the row rewritten; erasure —
  `anonymized_at` set — deletes it, so erased members are never counted), `member_tier` INSERT / UPDATE
  / DELETE, and `member_tag` INSERT / DELETE (statement triggers: one UPDATE per statement, each member's
  array changed relative to its current value, so concurrent taggings of one member both land).
- `memberbot_member_facts_rebuild(merchant)` rewrites a merchant's rows from the source tables (this
  migration for existing data; the benchmark after a COPY load with triggers off).
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

FACTS = r"""
CREATE TABLE IF NOT EXISTS member_facts (
    registered_at timestamptz NOT NULL,
    last_visit_at timestamptz,
    lifetime_spend_fen bigint NOT NULL,
    member_id integer PRIMARY KEY REFERENCES member (id) ON DELETE CASCADE,
    merchant_id integer NOT NULL,
    birthday date,
    store_id integer,
    acquired_by_id integer,
    subscribed boolean NOT NULL,
    has_phone boolean NOT NULL,
    blocked boolean NOT NULL,
    gender varchar(16),
    source varchar(16) NOT NULL,
    tier_code varchar(32),
    tags integer[]
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.05);
COMMENT ON TABLE member_facts IS
    'One row per live (not erased) member: what segment expressions test. Kept by triggers on member, member_tier and member_tag.';
CREATE INDEX IF NOT EXISTS member_facts_merchant ON member_facts (merchant_id, member_id);

CREATE OR REPLACE FUNCTION memberbot_member_facts_rebuild(p_merchant integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    DELETE FROM member_facts WHERE merchant_id = p_merchant;
    INSERT INTO member_facts (registered_at, last_visit_at, lifetime_spend_fen, member_id, merchant_id,
                              birthday, store_id, acquired_by_id, subscribed, has_phone, blocked, gender,
                              source, tier_code, tags)
    SELECT m.registered_at, m.last_visit_at, m.lifetime_spend_fen, m.id, m.merchant_id, m.birthday,
           m.store_id, m.acquired_by_id, m.subscribed, m.phone IS NOT NULL, m.blocked_at IS NOT NULL,
           m.gender, m.source, t.tier_code, g.tags
      FROM member m
      LEFT JOIN member_tier t ON t.member_id = m.id
      LEFT JOIN (SELECT mt.member_id, array_agg(mt.tag_id ORDER BY mt.tag_id) AS tags
                   FROM member_tag mt JOIN member mm ON mm.id = mt.member_id
                  WHERE mm.merchant_id = p_merchant
                  GROUP BY mt.member_id) g ON g.member_id = m.id
     WHERE m.merchant_id = p_merchant AND m.anonymized_at IS NULL
     ORDER BY m.id;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_member_facts_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO member_facts (registered_at, last_visit_at, lifetime_spend_fen, member_id, merchant_id,
                              birthday, store_id, acquired_by_id, subscribed, has_phone, blocked, gender,
                              source)
    SELECT n.registered_at, n.last_visit_at, n.lifetime_spend_fen, n.id, n.merchant_id, n.birthday,
           n.store_id, n.acquired_by_id, n.subscribed, n.phone IS NOT NULL, n.blocked_at IS NOT NULL,
           n.gender, n.source
      FROM new_members n
     WHERE n.anonymized_at IS NULL;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_member_facts_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.anonymized_at IS NOT NULL THEN
        DELETE FROM member_facts WHERE member_id = NEW.id;
        RETURN NULL;
    END IF;
    UPDATE member_facts
       SET registered_at = NEW.registered_at, last_visit_at = NEW.last_visit_at,
           lifetime_spend_fen = NEW.lifetime_spend_fen, birthday = NEW.birthday, store_id = NEW.store_id,
           acquired_by_id = NEW.acquired_by_id, subscribed = NEW.subscribed,
           has_phone = NEW.phone IS NOT NULL, blocked = NEW.blocked_at IS NOT NULL, gender = NEW.gender,
           source = NEW.source
     WHERE member_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_member_facts_tier() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE member_facts SET tier_code = NULL WHERE member_id = OLD.member_id;
    ELSE
        UPDATE member_facts SET tier_code = NEW.tier_code WHERE member_id = NEW.member_id;
    END IF;
    RETURN NULL;
END
$$;

-- Relative to each member's current array (re-read when a concurrent change to the row committed
-- first), never a snapshot's recomputation: two transactions tagging one member both land.
CREATE OR REPLACE FUNCTION memberbot_member_facts_tags_added() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE member_facts f
       SET tags = ARRAY(SELECT DISTINCT x FROM unnest(COALESCE(f.tags, '{}') || a.tags) AS x ORDER BY x)
      FROM (SELECT member_id, array_agg(tag_id) AS tags FROM added GROUP BY member_id) a
     WHERE f.member_id = a.member_id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION memberbot_member_facts_tags_removed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE member_facts f
       SET tags = NULLIF(ARRAY(SELECT x FROM unnest(f.tags) AS x WHERE x <> ALL (r.tags) ORDER BY x), '{}')
      FROM (SELECT member_id, array_agg(tag_id) AS tags FROM removed GROUP BY member_id) r
     WHERE f.member_id = r.member_id;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS member_facts_insert ON member;
CREATE TRIGGER member_facts_insert AFTER INSERT ON member REFERENCING NEW TABLE AS new_members
    FOR EACH STATEMENT EXECUTE FUNCTION memberbot_member_facts_insert();
DROP TRIGGER IF EXISTS member_facts_update ON member;
CREATE TRIGGER member_facts_update
    AFTER UPDATE OF registered_at, last_visit_at, lifetime_spend_fen, birthday, store_id, acquired_by_id,
                    subscribed, phone, blocked_at, gender, source, anonymized_at ON member
    FOR EACH ROW
    WHEN (OLD.registered_at IS DISTINCT FROM NEW.registered_at
          OR OLD.last_visit_at IS DISTINCT FROM NEW.last_visit_at
          OR OLD.lifetime_spend_fen IS DISTINCT FROM NEW.lifetime_spend_fen
          OR OLD.birthday IS DISTINCT FROM NEW.birthday
          OR OLD.store_id IS DISTINCT FROM NEW.store_id
          OR OLD.acquired_by_id IS DISTINCT FROM NEW.acquired_by_id
          OR OLD.subscribed IS DISTINCT FROM NEW.subscribed
          OR (OLD.phone IS NULL) <> (NEW.phone IS NULL)
          OR (OLD.blocked_at IS NULL) <> (NEW.blocked_at IS NULL)
          OR OLD.gender IS DISTINCT FROM NEW.gender
          OR OLD.source IS DISTINCT FROM NEW.source
          OR OLD.anonymized_at IS DISTINCT FROM NEW.anonymized_at)
    EXECUTE FUNCTION memberbot_member_facts_update();
DROP TRIGGER IF EXISTS member_facts_tier ON member_tier;
CREATE TRIGGER member_facts_tier AFTER INSERT OR UPDATE OF tier_code OR DELETE ON member_tier
    FOR EACH ROW EXECUTE FUNCTION memberbot_member_facts_tier();
DROP TRIGGER IF EXISTS member_facts_tags_added ON member_tag;
CREATE TRIGGER member_facts_tags_added AFTER INSERT ON member_tag REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION memberbot_member_facts_tags_added();
DROP TRIGGER IF EXISTS member_facts_tags_removed ON member_tag;
CREATE TRIGGER member_facts_tags_removed AFTER DELETE ON member_tag REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION memberbot_member_facts_tags_removed();

SELECT memberbot_member_facts_rebuild(id) FROM merchant ORDER BY id;
ANALYZE member_facts;
"""

DROP = """
DROP TRIGGER IF EXISTS member_facts_insert ON member;
DROP TRIGGER IF EXISTS member_facts_update ON member;
DROP TRIGGER IF EXISTS member_facts_tier ON member_tier;
DROP TRIGGER IF EXISTS member_facts_tags_added ON member_tag;
DROP TRIGGER IF EXISTS member_facts_tags_removed ON member_tag;
DROP FUNCTION IF EXISTS memberbot_member_facts_insert();
DROP FUNCTION IF EXISTS memberbot_member_facts_update();
DROP FUNCTION IF EXISTS memberbot_member_facts_tier();
DROP FUNCTION IF EXISTS memberbot_member_facts_tags_added();
DROP FUNCTION IF EXISTS memberbot_member_facts_tags_removed();
DROP FUNCTION IF EXISTS memberbot_member_facts_rebuild(integer);
DROP TABLE IF EXISTS member_facts;
"""


async def create(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(FACTS)  # type: ignore[attr-defined]


async def drop(apps: object, schema_editor: object) -> None:
    await schema_editor.client.execute_script(DROP)  # type: ignore[attr-defined]


class Migration(migrations.Migration):
    dependencies = [("models", "0028_analytics_rebuild_guard")]

    initial = False

    operations = [ops.RunPython(create, drop)]
