"""The merchant's tags: create, rename, change an automatic tag's rule, delete, list.

A tag is manual (staff apply and remove it) or automatic (its rule keeps it: `handlers.tags.recompute`);
the kind is fixed at creation. Names are unique per merchant. Creating an automatic tag, or changing its
rule (which bumps `rule_version`), queues the recomputation of that tag only, as a durable task in the
same transaction — on a million members it takes tens of seconds, so it never runs in the request.
Deleting a tag records its removal from each member in the history, and is refused while a segment's
expression uses it. Every change is audit-logged.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries
from handlers.core.errors import Conflict, NotFound, ValidationError
from handlers.core.tasks import Effects
from handlers.loyalty import config as loyalty_config
from handlers.rules import tag_rules
from handlers.rules.errors import RuleError
from handlers.tags import recompute
from models.member import Gender, MemberSource
from models.tag import Tag, TagKind

MAX_NAME = 32
MAX_TAGS = 500  # per merchant


def tag_not_found() -> NotFound:
    return NotFound("标签不存在", field="tag_id")


async def get_tag(merchant_id: int, tag_id: int, *, lock: bool = False) -> Tag:
    query = Tag.filter(id=tag_id, merchant_id=merchant_id)
    tag = await (query.select_for_update().first() if lock else query.first())
    if tag is None:
        raise tag_not_found()
    return tag


def _name(raw: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise ValidationError(f"标签名称 name 须为 1–{MAX_NAME} 个字符", field="name")
    return name


async def known_values(merchant_id: int) -> Mapping[str, Collection[str]]:
    """The values a rule's tier, source and gender lists may take for this merchant."""
    _, ladder = await loyalty_config.current_tiers(merchant_id)
    return {
        "tiers": {tier.code for tier in ladder},
        "sources": {source.value for source in MemberSource},
        "genders": {gender.value for gender in Gender},
    }


async def validate_rule(merchant_id: int, raw: object) -> dict[str, Any]:
    """The rule normalised, or a 400 naming the field as `rule.<path>`."""
    try:
        return tag_rules.parse_rule(raw, await known_values(merchant_id))
    except RuleError as exc:
        field = f"rule.{exc.field}" if exc.field else "rule"
        raise ValidationError(f"标签规则 {field} {exc.message}", field=field) from None


async def _unique_name(merchant_id: int, name: str, *, other_than: int | None = None) -> None:
    query = Tag.filter(merchant_id=merchant_id, name=name)
    if other_than is not None:
        query = query.exclude(id=other_than)
    if await query.exists():
        raise Conflict(f"标签名称 name「{name}」已存在", field="name")


async def create_tag(
    merchant_id: int, name: str, rule: object | None, *, actor: str, effects: Effects
) -> Tag:
    """A manual tag (no rule) or an automatic one (its computation queued)."""
    name = _name(name)
    normalised = await validate_rule(merchant_id, rule) if rule is not None else None
    async with in_transaction():
        await queries.fetch_rows(
            "SELECT id FROM merchant WHERE id = :merchant FOR UPDATE", merchant=merchant_id
        )
        if await Tag.filter(merchant_id=merchant_id).count() >= MAX_TAGS:
            raise Conflict(f"标签数量已达上限 {MAX_TAGS} 个，请先删除不用的标签", field="name")
        await _unique_name(merchant_id, name)
        tag = await Tag.create(
            merchant_id=merchant_id,
            name=name,
            kind=TagKind.AUTO if normalised else TagKind.MANUAL,
            rule=normalised,
            rule_version=1 if normalised else 0,
        )
        await audit_log.record(merchant_id, actor, "tag.create", f"tag:{tag.id}", name=name, rule=normalised)
        queued = await recompute.queue(effects, tag) if normalised else None
    if queued is not None:
        await effects.after_commit(queued)
    return tag


async def update_tag(
    merchant_id: int,
    tag_id: int,
    *,
    name: str | None,
    rule: object | None,
    actor: str,
    effects: Effects,
) -> Tag:
    """Rename, and for an automatic tag change its rule (queueing the recomputation of that tag only)."""
    new_name = _name(name) if name is not None else None
    normalised = await validate_rule(merchant_id, rule) if rule is not None else None
    async with in_transaction():
        tag = await get_tag(merchant_id, tag_id, lock=True)
        if normalised is not None and tag.kind != TagKind.AUTO:
            raise Conflict("手动标签没有规则：请新建一个自动标签", field="rule")
        changes: dict[str, Any] = {}
        if new_name is not None and new_name != tag.name:
            await _unique_name(merchant_id, new_name, other_than=tag.id)
            changes["name"] = tag.name = new_name
        rule_changed = normalised is not None and normalised != tag.rule
        if rule_changed:
            changes["rule"] = tag.rule = normalised
            tag.rule_version += 1
        if changes:
            await tag.save(update_fields=["name", "rule", "rule_version", "updated_at"])
            await audit_log.record(merchant_id, actor, "tag.update", f"tag:{tag.id}", **changes)
        queued = await recompute.queue(effects, tag) if rule_changed else None
    if queued is not None:
        await effects.after_commit(queued)
    return tag


async def segments_using(merchant_id: int, tag_id: int) -> list[str]:
    """The names of the segments whose expression tests this tag."""
    rows = await queries.fetch_rows(
        """SELECT name FROM segment WHERE merchant_id = :merchant
             AND jsonb_path_exists(expression, '$.** ? (@.tag == $id)',
                                   jsonb_build_object('id', CAST(:tag AS integer)))
           ORDER BY name""",
        merchant=merchant_id,
        tag=tag_id,
    )
    return [row["name"] for row in rows]


_DELETE_SQL = """
WITH gone AS (DELETE FROM member_tag WHERE tag_id = :tag RETURNING member_id)
INSERT INTO member_tag_history
       (merchant_id, tag_id, tag_name, member_id, change, at, staff_id, rule_version, reason)
SELECT :merchant, :tag, :name, member_id, 'removed', :now, :staff, NULL, 'tag_deleted' FROM gone
"""


async def delete_tag(
    merchant_id: int, tag_id: int, *, actor: str, staff_id: int | None, now: datetime
) -> None:
    """Delete the tag; each member who held it gets a `removed` history row."""
    async with in_transaction():
        tag = await get_tag(merchant_id, tag_id, lock=True)
        used = await segments_using(merchant_id, tag_id)
        if used:
            raise Conflict(f"标签正被人群使用：{'、'.join(used)}，请先修改这些人群", field="tag_id")
        await queries.fetch_rows(
            _DELETE_SQL, tag=tag.id, merchant=merchant_id, name=tag.name, now=now, staff=staff_id
        )
        await Tag.filter(id=tag.id).delete()
        await audit_log.record(merchant_id, actor, "tag.delete", f"tag:{tag.id}", name=tag.name)


async def list_tags(merchant_id: int) -> list[Tag]:
    return await Tag.filter(merchant_id=merchant_id).order_by("name", "id")
