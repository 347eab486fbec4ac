"""Recomputing automatic tags: one set-based statement per tag.

The tag's row is locked for the run (two recomputations of one tag take turns). One statement selects
the members its rule tags now (`handlers.tags.rule_sql`), deletes the `member_tag` rows of members no
longer selected, inserts those newly selected, and writes a history row for each change (by the rule,
with its `rule_version`) — data-modifying CTEs, so all of it commits or none. Members who keep the tag
are not touched: their `added_at` stays the day they entered it.

The plan does not depend on statistics being fresh (a tag that just gained 300,000 members still looks
empty to the planner until the next analyze): the selection meets the tag's current members in a FULL
JOIN (hash or merge, never a nested loop), and the rows to delete are found by the unique
(tag_id, member_id) index from an array. After a large change, outside the transaction, `member_tag` is
analyzed (segment previews plan with the tag's real size) and `member_facts` vacuumed: every member whose
tags changed had its facts row rewritten (migration 0029's triggers), and until the dead versions are
gone every count scans them and the next tagging extends the file instead of reusing their space.

`queue` queues one tag's recomputation as a durable task (`TAG_RECOMPUTE`, run by the worker or the
embedded runner, retried on failure): what creating an automatic tag or changing its rule does.
`recompute_merchant` runs every automatic tag of a merchant (the nightly job runs every merchant's).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from tortoise import connections
from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries
from handlers.core.errors import NotFound
from handlers.core.tasks import Effects, Queued
from handlers.loyalty import config as loyalty_config
from handlers.tags import rule_sql
from models.merchant import Merchant
from models.tag import Tag, TagKind

log = logging.getLogger(__name__)
ANALYZE_AFTER = 10_000  # changed rows


TAG_RECOMPUTE = "tag.recompute"


class Counts(TypedDict):
    members: int
    added: int
    removed: int


_APPLY = """
WITH target AS MATERIALIZED ({select}),
diff AS MATERIALIZED (
    SELECT COALESCE(t.id, held.member_id) AS id, t.id IS NOT NULL AS wanted,
           held.member_id IS NOT NULL AS holds
      FROM target t
      FULL JOIN (SELECT member_id FROM member_tag WHERE tag_id = :tag) held ON held.member_id = t.id
),
removed AS (
    DELETE FROM member_tag
     WHERE tag_id = :tag AND member_id = ANY(ARRAY(SELECT id FROM diff WHERE holds AND NOT wanted))
    RETURNING member_id
),
added AS (
    INSERT INTO member_tag (tag_id, member_id, added_at, added_by_id)
    SELECT :tag, id, :at, NULL FROM diff WHERE wanted AND NOT holds
    ON CONFLICT (tag_id, member_id) DO NOTHING
    RETURNING member_id
),
added_history AS (
    INSERT INTO member_tag_history
           (merchant_id, tag_id, tag_name, member_id, change, at, staff_id, rule_version, reason)
    SELECT :merchant, :tag, :tag_name, member_id, 'added', :at, NULL, :version, 'rule' FROM added
),
removed_history AS (
    INSERT INTO member_tag_history
           (merchant_id, tag_id, tag_name, member_id, change, at, staff_id, rule_version, reason)
    SELECT :merchant, :tag, :tag_name, member_id, 'removed', :at, NULL, :version, 'rule' FROM removed
)
SELECT (SELECT count(*) FROM target) AS members, (SELECT count(*) FROM added) AS added,
       (SELECT count(*) FROM removed) AS removed
"""


async def recompute_tag(merchant_id: int, tag_id: int, *, now: datetime, timezone: str) -> Counts:
    """Bring the automatic tag's members in line with its rule at `now`."""
    _, ladder = await loyalty_config.current_tiers(merchant_id)
    today = now.astimezone(ZoneInfo(timezone)).date()
    async with in_transaction():
        tag = await Tag.filter(id=tag_id, merchant_id=merchant_id).select_for_update().first()
        if tag is None:
            raise NotFound("标签不存在", field="tag_id")
        if tag.kind != TagKind.AUTO or tag.rule is None:
            return Counts(members=tag.member_count, added=0, removed=0)
        query = rule_sql.compile_rule(
            tag.rule, merchant_id=merchant_id, now=now, today=today, base_tier=ladder[0].code
        )
        params = dict(query.params, tag=tag.id, tag_name=tag.name, at=now, version=tag.rule_version)
        row = await queries.fetch_one(_APPLY.format(select=query.sql), **params)
        counts = Counts(members=int(row["members"]), added=int(row["added"]), removed=int(row["removed"]))
        await Tag.filter(id=tag.id).update(recomputed_at=now, member_count=counts["members"])
    if counts["added"] + counts["removed"] >= ANALYZE_AFTER:
        await after_bulk_write()
    return counts


async def after_bulk_write() -> None:
    """After many tag changes: fresh statistics for `member_tag`, and `member_facts` vacuumed (its dead
    row versions removed, their space free for the next writes; not inside a transaction)."""
    await queries.fetch_rows("ANALYZE member_tag")
    await connections.get("default").execute_script("VACUUM (ANALYZE) member_facts")


async def recompute_on_demand(merchant: Merchant, tag_id: int, *, actor: str, now: datetime) -> Counts:
    """A staff member's `POST …/recompute`: the recomputation, and its audit-log entry with the counts."""
    counts = await recompute_tag(merchant.id, tag_id, now=now, timezone=merchant.timezone)
    await audit_log.record(merchant.id, actor, "tag.recompute", f"tag:{tag_id}", **counts)
    return counts


async def recompute_merchant(merchant: Merchant, now: datetime) -> dict[str, int]:
    counts = {"tags": 0, "added": 0, "removed": 0}
    rows = await queries.fetch_rows(
        "SELECT id FROM tag WHERE merchant_id = :merchant AND kind = 'auto' ORDER BY id", merchant=merchant.id
    )
    for tag_id in (int(row["id"]) for row in rows):
        done = await recompute_tag(merchant.id, tag_id, now=now, timezone=merchant.timezone)
        counts["tags"] += 1
        counts["added"] += done["added"]
        counts["removed"] += done["removed"]
    return counts


async def nightly(now: datetime) -> dict[str, int]:
    """Every merchant's automatic tags (the nightly job)."""
    total = {"tags": 0, "added": 0, "removed": 0}
    merchant_ids = await Tag.filter(kind=TagKind.AUTO).distinct().values_list("merchant_id", flat=True)
    for merchant in await Merchant.filter(id__in=list(merchant_ids)).order_by("id"):
        for key, value in (await recompute_merchant(merchant, now)).items():
            total[key] += value
    return total


async def queue(effects: Effects, tag: Tag) -> Queued:
    """Queue the tag's recomputation, in the caller's transaction (once per rule version)."""
    return await effects.queue(
        TAG_RECOMPUTE,
        f"{tag.id}:{tag.rule_version}",
        {"merchant_id": tag.merchant_id, "tag_id": tag.id},
        merchant_id=tag.merchant_id,
    )


async def run_task(effects: Effects, payload: Mapping[str, Any], now: datetime) -> dict[str, int] | None:
    """The `tag.recompute` task: a tag deleted meanwhile is nothing to do."""
    merchant = await Merchant.get_or_none(id=payload["merchant_id"])
    if merchant is None or not await Tag.exists(id=payload["tag_id"], merchant_id=merchant.id):
        return None
    counts = await recompute_tag(merchant.id, int(payload["tag_id"]), now=now, timezone=merchant.timezone)
    return {"members": counts["members"], "added": counts["added"], "removed": counts["removed"]}
