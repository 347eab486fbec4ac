"""Admin JSON API: segments — saved boolean expressions over tags and member attributes — and the
audience preview (count and a masked sample). Managers and admins; every change is audit-logged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, model_validator

from handlers.segments import audience, catalogue, wechat_sync
from models.tag import Segment
from webhooks.api import Call, In, IntId, Line, Out, Routes
from webhooks.auth import ADMIN, MANAGER

routes = Routes("admin_segments")

EXPRESSION_DOC = (
    'AND / OR / NOT over tags and attributes, e.g. {"and": [{"tag": 3}, {"not": {"attr": "gender", '
    '"op": "eq", "value": "male"}}, {"attr": "last_visit_days", "op": "gte", "value": 60}]}; attributes: '
    "gender, tier, source, store_id, acquired_by, birthday_month (eq, in); age, registered_days, "
    "last_visit_days, lifetime_spend_fen, points (gte, lte, between [low, high]); subscribed, has_phone, "
    "blocked (eq true/false)"
)
SegmentName = Annotated[
    Line, Field(min_length=1, max_length=catalogue.MAX_NAME, examples=["60天未到店女性会员"])
]


class SegmentIn(In):
    name: SegmentName
    expression: dict[str, Any] = Field(description=EXPRESSION_DOC)


class SegmentPatch(In):
    name: SegmentName | None = None
    expression: dict[str, Any] | None = Field(None, description=EXPRESSION_DOC)


class SegmentPath(In):
    segment_id: IntId


class SegmentOut(Out):
    id: int
    name: str
    expression: dict[str, Any]
    wechat_tag_id: int | None = Field(description="the WeChat user tag it is synced to")
    sync_status: str = Field(description='"" (never synced), queued, running, done or failed')
    sync_error: str
    synced_at: datetime | None
    synced_count: int = Field(description="members tagged in WeChat by the last sync")
    created_at: datetime
    updated_at: datetime


class SegmentsOut(Out):
    items: list[SegmentOut]


class PreviewIn(In):
    expression: dict[str, Any] | None = Field(None, description=EXPRESSION_DOC)
    segment_id: IntId | None = Field(None, description="preview a saved segment instead")
    sample: Annotated[int, Field(ge=0, le=audience.MAX_SAMPLE)] = 10

    @model_validator(mode="after")
    def one_source(self) -> PreviewIn:
        if (self.expression is None) == (self.segment_id is None):
            raise ValueError("expression 与 segment_id 须恰好给出一个")
        return self


class SampleOut(Out):
    id: int
    code: str
    name: str = Field(description="masked: 张**")
    phone: str = Field(description="masked: 138****5678")


class PreviewOut(Out):
    count: int = Field(description="members the expression selects now (erased members never)")
    sample: list[SampleOut] = Field(description="the first members by id, masked")


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


def segment_out(segment: Segment) -> SegmentOut:
    return SegmentOut(**{name: getattr(segment, name) for name in SegmentOut.model_fields})


@routes.get("/api/admin/segments", response=SegmentsOut, auth=MANAGER)
async def list_segments(call: Call[None, None]) -> SegmentsOut:
    """The merchant's saved segments, by name."""
    return SegmentsOut(items=[segment_out(s) for s in await catalogue.list_segments(call.merchant.id)])


@routes.post(
    "/api/admin/segments", body=SegmentIn, response=SegmentOut, status=201, auth=MANAGER, errors=(409,)
)
async def create_segment(call: Call[SegmentIn, None]) -> SegmentOut:
    """Save a segment; its expression is validated (shape, and every tag, tier, store, staff it names)."""
    segment = await catalogue.create_segment(
        call.merchant.id, call.body.name, call.body.expression, actor=_actor(call)
    )
    return segment_out(segment)


@routes.post("/api/admin/segments/preview", body=PreviewIn, response=PreviewOut, auth=MANAGER, errors=(404,))
async def preview(call: Call[PreviewIn, None]) -> PreviewOut:
    """The audience of an expression (or a saved segment): how many members, and a masked sample."""
    expression = call.body.expression
    if expression is None:
        assert call.body.segment_id is not None  # the model requires one of the two
        expression = await audience.load_expression(call.merchant.id, call.body.segment_id)
    total, sample = await audience.preview(call.merchant.id, expression, sample=call.body.sample)
    return PreviewOut(
        count=total, sample=[SampleOut(id=m.id, code=m.code, name=m.name, phone=m.phone) for m in sample]
    )


@routes.get("/api/admin/segments/{segment_id}", path_model=SegmentPath, response=SegmentOut, auth=MANAGER)
async def get_segment(call: Call[None, SegmentPath]) -> SegmentOut:
    """One segment."""
    return segment_out(await catalogue.get_segment(call.merchant.id, call.path.segment_id))


@routes.patch(
    "/api/admin/segments/{segment_id}",
    path_model=SegmentPath,
    body=SegmentPatch,
    response=SegmentOut,
    auth=MANAGER,
    errors=(409,),
)
async def update_segment(call: Call[SegmentPatch, SegmentPath]) -> SegmentOut:
    """Rename a segment or change its expression (validated again)."""
    segment = await catalogue.update_segment(
        call.merchant.id,
        call.path.segment_id,
        name=call.body.name,
        expression=call.body.expression,
        actor=_actor(call),
    )
    return segment_out(segment)


@routes.delete("/api/admin/segments/{segment_id}", path_model=SegmentPath, auth=ADMIN, errors=(409,))
async def delete_segment(call: Call[None, SegmentPath]) -> None:
    """Delete a segment (and, in the background, the WeChat tag it was synced to); refused (409) while
    a campaign not yet done or cancelled, or a journey, uses it."""
    await wechat_sync.delete_segment(
        call.merchant, call.path.segment_id, actor=_actor(call), effects=call.effects
    )


@routes.post(
    "/api/admin/segments/{segment_id}/sync",
    path_model=SegmentPath,
    response=SegmentOut,
    status=202,
    auth=ADMIN,
    errors=(409,),
)
async def sync_segment(call: Call[None, SegmentPath]) -> SegmentOut:
    """Sync the segment's following members to a WeChat user tag (in the background; see sync_status)."""
    segment = await wechat_sync.request_sync(
        call.merchant, call.path.segment_id, actor=_actor(call), now=datetime.now(UTC), effects=call.effects
    )
    return segment_out(segment)
