"""Admin JSON API: member tags — manual and automatic (with a rule), applying and removing them, bulk
files with a report, recomputation, and a member's tags and history. Managers and admins; deleting a
tag is for admins. Every change is audit-logged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from handlers.rules.tag_rules import TYPES
from handlers.tags import assign, catalogue, recompute, views
from models.tag import Tag, TagKind
from webhooks.api import Call, In, IntId, Line, Out, Routes
from webhooks.auth import ADMIN, MANAGER
from webhooks.forms import Upload

routes = Routes("admin_tags")

RULE_DOC = (
    "an automatic tag's rule, e.g. "
    '{"type": "rfm", "window_days": 365, "segment": "重要价值客户", "recency_days": 30, '
    '"frequency": 3, "monetary_fen": 100000}; types: ' + ", ".join(TYPES)
)
TagName = Annotated[Line, Field(min_length=1, max_length=catalogue.MAX_NAME, examples=["新品尝鲜"])]


class TagIn(In):
    name: TagName
    rule: dict[str, Any] | None = Field(None, description=RULE_DOC + "; absent: a manual tag")


class TagPatch(In):
    name: TagName | None = None
    rule: dict[str, Any] | None = Field(None, description="the new rule (automatic tags only)")


class TagPath(In):
    tag_id: IntId


class TagMemberPath(In):
    tag_id: IntId
    member_id: IntId


class MemberPath(In):
    member_id: IntId


class CountsOut(Out):
    members: int = Field(description="members holding the tag now")
    added: int
    removed: int


class TagOut(Out):
    id: int
    name: str
    kind: TagKind
    rule: dict[str, Any] | None
    rule_version: int
    member_count: int
    recomputed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class TagsOut(Out):
    items: list[TagOut]


class ApplyIn(In):
    member_id: IntId


class ChangedOut(Out):
    changed: bool = Field(description="false: the member already held (or did not hold) the tag")


class BulkForm(In):
    file: Annotated[
        Upload,
        Field(
            description="CSV (UTF-8 or GBK) or XLSX; one column 会员码 (code) or 手机号 (phone), header first"
        ),
    ]
    action: Literal["add", "remove"] = "add"
    dry_run: bool = Field(False, description="check and report only")


class RejectionOut(Out):
    row: int = Field(description="the spreadsheet's row number (the header is row 1)")
    value: str
    reason: str = Field(description="unknown, erased, duplicate, invalid, shared or empty")
    message: str


class BulkOut(Out):
    action: str
    column: str = Field(description="code or phone: the column the file names members by")
    rows: int
    applied: bool = Field(description="false: nothing changed (a dry run, or rejected rows)")
    changed: int
    unchanged: int
    rejected: int
    rejections: list[RejectionOut] = Field(description=f"at most {assign.MAX_REJECTIONS}, in file order")


class HeldTagOut(Out):
    tag_id: int
    name: str
    kind: str
    added_at: datetime
    added_by: int | None = Field(description="the staff id; null: added by the tag's rule")


class HistoryOut(Out):
    id: int
    tag_id: int
    tag_name: str
    change: str = Field(description="added or removed")
    at: datetime
    staff_id: int | None
    rule_version: int | None = Field(description="the rule version that made the change")
    reason: str = Field(description="manual, bulk, rule or tag_deleted")


class MemberTagsOut(Out):
    tags: list[HeldTagOut]
    history: list[HistoryOut] = Field(description="newest first")
    next_before: int | None = Field(description="pass as ?before= for older history; null at the end")


class HistoryQuery(In):
    before: Annotated[int, Field(ge=1, le=2**62)] | None = None
    limit: Annotated[int, Field(ge=1, le=views.MAX_PAGE)] = 50


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


def tag_out(tag: Tag) -> TagOut:
    return TagOut(
        id=tag.id,
        name=tag.name,
        kind=TagKind(tag.kind),
        rule=tag.rule,
        rule_version=tag.rule_version,
        member_count=tag.member_count,
        recomputed_at=tag.recomputed_at,
        created_at=tag.created_at,
        updated_at=tag.updated_at,
    )


@routes.get("/api/admin/tags", response=TagsOut, auth=MANAGER)
async def list_tags(call: Call[None, None]) -> TagsOut:
    """The merchant's tags, by name, with their member counts."""
    return TagsOut(items=[tag_out(tag) for tag in await catalogue.list_tags(call.merchant.id)])


@routes.post("/api/admin/tags", body=TagIn, response=TagOut, status=201, auth=MANAGER, errors=(409,))
async def create_tag(call: Call[TagIn, None]) -> TagOut:
    """Create a manual tag, or an automatic one (with a rule), computed in the background (recomputed_at)."""
    tag = await catalogue.create_tag(
        call.merchant.id, call.body.name, call.body.rule, actor=_actor(call), effects=call.effects
    )
    return tag_out(tag)


@routes.get("/api/admin/tags/{tag_id}", path_model=TagPath, response=TagOut, auth=MANAGER)
async def get_tag(call: Call[None, TagPath]) -> TagOut:
    """One tag."""
    return tag_out(await catalogue.get_tag(call.merchant.id, call.path.tag_id))


@routes.patch(
    "/api/admin/tags/{tag_id}",
    path_model=TagPath,
    body=TagPatch,
    response=TagOut,
    auth=MANAGER,
    errors=(409,),
)
async def update_tag(call: Call[TagPatch, TagPath]) -> TagOut:
    """Rename a tag, or change an automatic tag's rule (that tag alone is recomputed, in the background)."""
    tag = await catalogue.update_tag(
        call.merchant.id,
        call.path.tag_id,
        name=call.body.name,
        rule=call.body.rule,
        actor=_actor(call),
        effects=call.effects,
    )
    return tag_out(tag)


@routes.delete("/api/admin/tags/{tag_id}", path_model=TagPath, auth=ADMIN, errors=(409,))
async def delete_tag(call: Call[None, TagPath]) -> None:
    """Delete a tag (its members' history records the removal); refused while a segment uses it."""
    await catalogue.delete_tag(
        call.merchant.id, call.path.tag_id, actor=_actor(call), staff_id=call.staff.id, now=datetime.now(UTC)
    )


@routes.post("/api/admin/tags/{tag_id}/recompute", path_model=TagPath, response=CountsOut, auth=MANAGER)
async def recompute_tag(call: Call[None, TagPath]) -> CountsOut:
    """Recompute an automatic tag now, in the request (a manual tag is left as it is)."""
    counts = await recompute.recompute_on_demand(
        call.merchant, call.path.tag_id, actor=_actor(call), now=datetime.now(UTC)
    )
    return CountsOut(**counts)


@routes.post(
    "/api/admin/tags/{tag_id}/members",
    path_model=TagPath,
    body=ApplyIn,
    response=ChangedOut,
    auth=MANAGER,
    errors=(409,),
)
async def apply_tag(call: Call[ApplyIn, TagPath]) -> ChangedOut:
    """Apply a manual tag to one member."""
    changed = await assign.change_one(
        call.merchant.id,
        call.path.tag_id,
        call.body.member_id,
        "add",
        staff_id=call.staff.id,
        now=datetime.now(UTC),
    )
    return ChangedOut(changed=changed)


@routes.delete(
    "/api/admin/tags/{tag_id}/members/{member_id}",
    path_model=TagMemberPath,
    response=ChangedOut,
    auth=MANAGER,
    errors=(409,),
)
async def remove_tag(call: Call[None, TagMemberPath]) -> ChangedOut:
    """Remove a manual tag from one member."""
    changed = await assign.change_one(
        call.merchant.id,
        call.path.tag_id,
        call.path.member_id,
        "remove",
        staff_id=call.staff.id,
        now=datetime.now(UTC),
    )
    return ChangedOut(changed=changed)


@routes.post(
    "/api/admin/tags/{tag_id}/bulk",
    path_model=TagPath,
    form=BulkForm,
    response=BulkOut,
    auth=MANAGER,
    errors=(409,),
)
async def bulk(call: Call[BulkForm, TagPath]) -> BulkOut:
    """Apply or remove a manual tag for the members a CSV/XLSX file lists; a rejected row: nothing changes."""
    report = await assign.bulk(
        call.merchant.id,
        call.path.tag_id,
        call.body.file.file.read(),
        call.body.action,
        staff_id=call.staff.id,
        now=datetime.now(UTC),
        dry_run=call.body.dry_run,
    )
    return BulkOut(
        action=report.action,
        column=report.column,
        rows=report.rows,
        applied=report.applied,
        changed=report.changed,
        unchanged=report.unchanged,
        rejected=report.rejected,
        rejections=[
            RejectionOut(row=r.row, value=r.value, reason=r.reason, message=r.message)
            for r in report.rejections
        ],
    )


@routes.get(
    "/api/admin/members/{member_id}/tags",
    path_model=MemberPath,
    query=HistoryQuery,
    response=MemberTagsOut,
    auth=MANAGER,
)
async def member_tags(call: Call[None, MemberPath]) -> MemberTagsOut:
    """A member's tags, and the history of their tags (when added or removed, by which rule or person)."""
    query: HistoryQuery = call.query
    held = await views.member_tags(call.merchant.id, call.path.member_id)
    history, before = await views.member_history(
        call.merchant.id, call.path.member_id, before=query.before, limit=query.limit
    )
    return MemberTagsOut(
        tags=[
            HeldTagOut(tag_id=h.tag_id, name=h.name, kind=h.kind, added_at=h.added_at, added_by=h.added_by)
            for h in held
        ],
        history=[HistoryOut(**vars_of(h)) for h in history],
        next_before=before,
    )


def vars_of(row: views.HistoryRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in HistoryOut.model_fields}
