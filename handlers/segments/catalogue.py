"""The merchant's saved segments: create, change, delete, list. An expression is validated on save
(shape, and every tag, tier, store and staff it names); names are unique per merchant; every change is
audit-logged."""

from __future__ import annotations

from typing import Any

from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import Conflict, ValidationError
from handlers.segments import audience
from handlers.segments.expression import parse
from models.campaign import Campaign, CampaignState, Journey
from models.tag import Segment

MAX_NAME = 32
MAX_SEGMENTS = 500
# a campaign in these states still reads its segment (a finished or cancelled one never again)
LIVE_CAMPAIGN = (CampaignState.DRAFT, CampaignState.SCHEDULED, CampaignState.SENDING, CampaignState.PAUSED)


def _name(raw: str) -> str:
    name = raw.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise ValidationError(f"人群名称 name 须为 1–{MAX_NAME} 个字符", field="name")
    return name


async def _validated(merchant_id: int, expression: object) -> dict[str, Any]:
    normalised = parse(expression)
    await audience.compile_for(merchant_id, normalised)
    return normalised


async def _unique(merchant_id: int, name: str, other_than: int | None = None) -> None:
    query = Segment.filter(merchant_id=merchant_id, name=name)
    if other_than is not None:
        query = query.exclude(id=other_than)
    if await query.exists():
        raise Conflict(f"人群名称 name「{name}」已存在", field="name")


async def get_segment(merchant_id: int, segment_id: int, *, lock: bool = False) -> Segment:
    query = Segment.filter(id=segment_id, merchant_id=merchant_id)
    segment = await (query.select_for_update().first() if lock else query.first())
    if segment is None:
        raise audience.segment_not_found()
    return segment


async def create_segment(merchant_id: int, name: str, expression: object, *, actor: str) -> Segment:
    name = _name(name)
    normalised = await _validated(merchant_id, expression)
    async with in_transaction():
        if await Segment.filter(merchant_id=merchant_id).count() >= MAX_SEGMENTS:
            raise Conflict(f"人群数量已达上限 {MAX_SEGMENTS} 个", field="name")
        await _unique(merchant_id, name)
        segment = await Segment.create(merchant_id=merchant_id, name=name, expression=normalised)
        await audit_log.record(
            merchant_id, actor, "segment.create", f"segment:{segment.id}", name=name, expression=normalised
        )
    return segment


async def update_segment(
    merchant_id: int, segment_id: int, *, name: str | None, expression: object | None, actor: str
) -> Segment:
    new_name = _name(name) if name is not None else None
    normalised = await _validated(merchant_id, expression) if expression is not None else None
    async with in_transaction():
        segment = await get_segment(merchant_id, segment_id, lock=True)
        changes: dict[str, Any] = {}
        if new_name is not None and new_name != segment.name:
            await _unique(merchant_id, new_name, other_than=segment.id)
            changes["name"] = segment.name = new_name
        if normalised is not None and normalised != segment.expression:
            changes["expression"] = segment.expression = normalised
        if changes:
            await segment.save(update_fields=["name", "expression", "updated_at"])
            await audit_log.record(merchant_id, actor, "segment.update", f"segment:{segment.id}", **changes)
    return segment


async def users_of(merchant_id: int, segment_id: int) -> list[str]:
    """What still reads the segment: campaigns not yet done or cancelled, and journeys, on or off (a
    journey switched on again counts its segment; one that is deleted does not) — each as 「名称」."""
    mine = {"merchant_id": merchant_id, "segment_id": segment_id}
    live = Campaign.filter(**mine, state__in=LIVE_CAMPAIGN, journey_id=None)  # a journey's own: below
    campaigns = await live.order_by("id").values_list("name", flat=True)
    journeys = await Journey.filter(**mine).order_by("id").values_list("name", flat=True)
    return [f"营销活动「{name}」" for name in campaigns] + [f"自动化旅程「{name}」" for name in journeys]


async def delete_segment(merchant_id: int, segment_id: int, *, actor: str) -> Segment:
    """Delete the segment; returns it as it was (its WeChat tag, if synced, is the caller's to drop).
    Refused while a campaign not yet done or a journey uses it."""
    async with in_transaction():
        segment = await get_segment(merchant_id, segment_id, lock=True)
        used = await users_of(merchant_id, segment.id)
        if used:
            raise Conflict(f"人群正被使用：{'、'.join(used)}，请先修改或结束它们", field="segment_id")
        await Segment.filter(id=segment.id).delete()
        await audit_log.record(
            merchant_id, actor, "segment.delete", f"segment:{segment.id}", name=segment.name
        )
    return segment


async def list_segments(merchant_id: int) -> list[Segment]:
    return await Segment.filter(merchant_id=merchant_id).order_by("name", "id")
