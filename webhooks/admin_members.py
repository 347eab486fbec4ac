"""The merchant's members (back office): search and export, profile edits, blocking, staff notes.

Managers and admins search, export, edit and block; a manager's search and export list only the
members of their own store (the acquiring store; naming another store is 403, and so is a manager
without a store), admins' every member. Exporting full phone numbers is for admins only (a manager asking
gets 403), and every export is audit-logged. Any staff member may add a note (a
cashier talks to members at the till); reading notes is part of the member's page (manager and up).
One member's page and its collections are `webhooks.admin_member_page`.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import Field

from handlers.core.errors import ErrorCode
from handlers.directory import export, search
from handlers.members import blocking, editing, notes
from handlers.members.mp_login import ProfileEdit
from handlers.members.profile import mask_phone
from handlers.staff.scope import scope_of
from models.member import Gender, Member
from models.staff import Staff, StaffRole
from webhooks.api import ApiError, Call, In, IntId, Line, Multiline, Out, Routes
from webhooks.auth import CASHIER, MANAGER
from webhooks.mp import ProfilePatch

log = logging.getLogger(__name__)
routes = Routes("admin_members")
Day = Annotated[date, Field(description="merchant-local day, e.g. 2024-05-01 (both ends included)")]


class FilterQuery(In):
    """Search filters (all optional, combined) and the order."""

    code: Annotated[Line, Field(min_length=1, max_length=20, description="member code")] | None = None
    external_id: (
        Annotated[Line, Field(min_length=1, max_length=64, description="the merchant's own member number")]
        | None
    ) = None
    phone: Annotated[Line, Field(min_length=1, max_length=32, description="the full phone number")] | None = (
        None
    )
    name: Annotated[Line, Field(min_length=1, max_length=32, description="name starts with")] | None = None
    name_contains: Annotated[Line, Field(min_length=1, max_length=32, description="name contains")] | None = (
        None
    )
    tier: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="tier code")] | None = None
    store_id: Annotated[IntId | None, Field(description="the acquiring store")] = None
    registered_from: Day | None = None
    registered_to: Day | None = None
    visited_from: Annotated[Day | None, Field(description="last visit on or after this day")] = None
    visited_to: Annotated[Day | None, Field(description="last visit on or before this day")] = None
    blocked: bool | None = None
    tag_id: Annotated[IntId | None, Field(description="members holding this tag")] = None
    sort: Literal["registered_at", "last_visit", "points", "lifetime_spend"] = "registered_at"
    order: Literal["asc", "desc"] = "desc"


class SearchQuery(FilterQuery):
    cursor: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,200}$", description="next_cursor")] | None = None
    limit: Annotated[int, Field(ge=1, le=search.MAX_PAGE)] = 50


class ExportQuery(FilterQuery):
    format: Literal["csv", "xlsx"] = "csv"
    full_phone: bool = Field(
        False, description="the full phone number instead of the masked one (admin only)"
    )


class MemberRowOut(Out):
    id: int
    code: str
    external_id: str | None = Field(description="the merchant's own member number, from an import")
    name: str | None
    phone: str = Field(description="masked, e.g. 138****5678")
    gender: Gender | None
    birthday: date | None
    tier_code: str
    tier_name: str
    points: int
    lifetime_spend_fen: int = Field(description="cash paid over completed, not refunded purchases")
    registered_at: datetime
    last_visit_at: datetime | None = Field(description="the latest till purchase or daily check-in")
    source: str
    subscribed: bool = Field(description="follows the Official Account")
    blocked: bool
    store_id: int | None = Field(description="the acquiring store")
    store_code: str | None
    store_name: str | None


class MembersOut(Out):
    items: list[MemberRowOut]
    next_cursor: str | None = Field(description="pass as ?cursor= (same filters and order); null at the end")


def _filters(query: FilterQuery, staff: Staff) -> search.Filters:
    """The query's filters, a manager's limited to their own store (`handlers.staff.scope`)."""
    return search.Filters(
        code=query.code,
        external_id=query.external_id,
        phone=query.phone,
        name=query.name,
        name_contains=query.name_contains,
        tier=query.tier,
        store_id=scope_of(staff).store_filter(query.store_id),
        registered_from=query.registered_from,
        registered_to=query.registered_to,
        visited_from=query.visited_from,
        visited_to=query.visited_to,
        blocked=query.blocked,
        tag_id=query.tag_id,
    )


def _row(row: search.Row) -> MemberRowOut:
    values = {name: getattr(row, name) for name in MemberRowOut.model_fields if name != "phone"}
    return MemberRowOut(**values, phone=mask_phone(row.phone))


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


@routes.get("/api/admin/members", query=SearchQuery, response=MembersOut, auth=MANAGER)
async def list_members(call: Call[None, None]) -> MembersOut:
    """Search the members: filters, sort (registered_at, last_visit, points, lifetime_spend), keyset pages."""
    query: SearchQuery = call.query
    found = await search.plan(
        call.merchant, _filters(query, call.staff), sort=query.sort, direction=query.order
    )
    page = await search.page(found, cursor=query.cursor, limit=query.limit)
    return MembersOut(items=[_row(row) for row in page.rows], next_cursor=page.next_cursor)


@routes.get(
    "/api/admin/members/export",
    query=ExportQuery,
    media=(export.MEDIA_TYPES["csv"], export.MEDIA_TYPES["xlsx"]),
    auth=MANAGER,
)
async def export_members(call: Call[None, None]) -> web.StreamResponse:
    """The search's members as CSV or XLSX (?format=), streamed; full phones for admins (audited)."""
    query: ExportQuery = call.query
    if query.full_phone and call.staff.role != StaffRole.ADMIN:
        raise ApiError(403, ErrorCode.FORBIDDEN, "导出完整手机号需要管理员权限", field="full_phone")
    filters = _filters(query, call.staff)
    found = await search.plan(call.merchant, filters, sort=query.sort, direction=query.order)
    await export.record(
        call.merchant,
        _actor(call),
        kind=query.format,
        filters=filters,
        found=found,
        full_phone=query.full_phone,
    )
    stamp = datetime.now(ZoneInfo(call.merchant.timezone)).strftime("%Y%m%d-%H%M")
    response = web.StreamResponse(
        headers={
            "Content-Type": export.MEDIA_TYPES[query.format],
            "Content-Disposition": f'attachment; filename="members-{stamp}.{query.format}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(call.request)
    write = export.write_csv if query.format == "csv" else export.write_xlsx
    try:
        await write(found, response.write, full_phone=query.full_phone, timezone=call.merchant.timezone)
    except Exception:
        # The status line is sent: no error response can follow. Cut the connection, so the client sees
        # an unfinished download instead of a file that merely looks short.
        log.exception("member export failed after it started", extra={"merchant": call.merchant.slug})
        if call.request.transport is not None:
            call.request.transport.close()
        return response
    await response.write_eof()
    return response


# One member: profile, blocking, notes ------------------------------------------------------------


class MemberPath(In):
    member_id: IntId


class ProfileOut(Out):
    id: int
    code: str
    external_id: str | None = Field(description="the merchant's own member number, from an import")
    name: str | None
    phone: str = Field(description="masked, e.g. 138****5678")
    gender: Gender | None
    birthday: date | None
    registered_at: datetime
    profile_complete: bool
    source: str
    subscribed: bool
    last_visit_at: datetime | None = Field(description="the latest till purchase or daily check-in")
    lifetime_spend_fen: int
    blocked: bool
    blocked_at: datetime | None
    blocked_reason: str


def profile_out(member: Member) -> ProfileOut:
    return ProfileOut(
        id=member.id,
        code=member.code,
        external_id=member.external_id,
        name=member.name,
        phone=mask_phone(member.phone),
        gender=Gender(member.gender) if member.gender else None,
        birthday=member.birthday,
        registered_at=member.registered_at,
        profile_complete=member.profile_completed_at is not None,
        source=member.source,
        subscribed=member.subscribed,
        last_visit_at=member.last_visit_at,
        lifetime_spend_fen=member.lifetime_spend_fen,
        blocked=member.blocked_at is not None,
        blocked_at=member.blocked_at,
        blocked_reason=member.blocked_reason,
    )


@routes.patch(
    "/api/admin/members/{member_id}",
    path_model=MemberPath,
    body=ProfilePatch,
    response=ProfileOut,
    auth=MANAGER,
    errors=(400, 404),
)
async def edit_profile(call: Call[ProfilePatch, MemberPath]) -> ProfileOut:
    """Change name, phone, birthday or gender, validated like the member's own edit; audit-logged."""
    body = call.body
    member = await editing.edit_profile(
        call.merchant,
        call.path.member_id,
        ProfileEdit(name=body.name, phone=body.phone, birthday=body.birthday, gender=body.gender),
        actor=_actor(call),
        today=datetime.now(ZoneInfo(call.merchant.timezone)).date(),
        now=datetime.now(UTC),
        effects=call.effects,
    )
    return profile_out(member)


class BlockIn(In):
    reason: Annotated[Line, Field(min_length=1, max_length=blocking.MAX_REASON, examples=["多次恶意退货"])]


@routes.post(
    "/api/admin/members/{member_id}/block",
    path_model=MemberPath,
    body=BlockIn,
    response=ProfileOut,
    auth=MANAGER,
    errors=(400, 404),
)
async def block(call: Call[BlockIn, MemberPath]) -> ProfileOut:
    """Block the member: no earning, spending or redeeming until unblocked (audit-logged)."""
    member = await blocking.block(
        call.merchant, call.path.member_id, reason=call.body.reason, actor=_actor(call), now=datetime.now(UTC)
    )
    return profile_out(member)


@routes.post(
    "/api/admin/members/{member_id}/unblock",
    path_model=MemberPath,
    response=ProfileOut,
    auth=MANAGER,
    errors=(404,),
)
async def unblock(call: Call[None, MemberPath]) -> ProfileOut:
    """Lift the block (audit-logged)."""
    return profile_out(await blocking.unblock(call.merchant, call.path.member_id, actor=_actor(call)))


class NoteIn(In):
    text: Annotated[Multiline, Field(min_length=1, max_length=notes.MAX_TEXT)]


class NoteOut(Out):
    id: int
    text: str
    author_id: int
    author: str = Field(description="the author's username")
    created_at: datetime


class NotesOut(Out):
    items: list[NoteOut]
    next_cursor: int | None = Field(description="pass as ?cursor= for older notes; null at the end")


class PageQuery(In):
    cursor: Annotated[int, Field(ge=1, le=2**62)] | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20


def note_out(note: notes.NoteView) -> NoteOut:
    return NoteOut(
        id=note.id, text=note.text, author_id=note.author_id, author=note.author, created_at=note.created_at
    )


@routes.post(
    "/api/admin/members/{member_id}/notes",
    path_model=MemberPath,
    body=NoteIn,
    response=NoteOut,
    status=201,
    auth=CASHIER,
    errors=(400, 404),
)
async def add_note(call: Call[NoteIn, MemberPath]) -> NoteOut:
    """Add a dated staff note about the member (联系记录, ≤ 1000 characters; notes are never edited)."""
    return note_out(await notes.add(call.merchant, call.path.member_id, call.staff, call.body.text))
