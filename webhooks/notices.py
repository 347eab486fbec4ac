"""Member notices over HTTP: the mini-program reports subscribe grants and lists the member's notices;
the merchant configures each kind and the quiet hours, and reads delivery records and counts."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from pydantic import Field

from handlers.members import lookup as members
from handlers.notices import reach, views
from handlers.notices import settings as notice_settings
from handlers.notices.catalog import KINDS
from models.notice import NoticeDelivery
from webhooks.api import Call, In, Out, Routes
from webhooks.auth import ADMIN, MANAGER, MEMBER
from webhooks.mp import MerchantPath
from webhooks.wallet import query

routes = Routes("notices")
TemplateId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class GrantsIn(In):
    accepted: Annotated[list[TemplateId], Field(default_factory=list, max_length=reach.MAX_TEMPLATE_IDS)]
    rejected: Annotated[list[TemplateId], Field(default_factory=list, max_length=reach.MAX_TEMPLATE_IDS)]


class GrantsOut(Out):
    unused: dict[str, int] = Field(description="unused one-time grants per template after this report")


class NoticeOut(Out):
    id: int
    kind: str
    label: str
    channel: str | None
    text: str
    sent_at: datetime | None


class NoticesOut(Out):
    items: list[NoticeOut]


def _notice(row: NoticeDelivery) -> NoticeOut:
    return NoticeOut(
        id=row.id,
        kind=row.kind,
        label=views.label(row.kind),
        channel=row.channel,
        text=row.text,
        sent_at=row.sent_at,
    )


@routes.post(
    "/api/mp/{merchant_slug}/subscriptions",
    path_model=MerchantPath,
    body=GrantsIn,
    response=GrantsOut,
    auth=MEMBER,
    errors=(400,),
)
async def report_grants(call: Call[GrantsIn, MerchantPath]) -> GrantsOut:
    """What the member chose in wx.requestSubscribeMessage: each accepted template allows one notice."""
    return GrantsOut(unused=await reach.record_grants(call.member, call.body.accepted, call.body.rejected))


@routes.get("/api/mp/{merchant_slug}/notices", path_model=MerchantPath, response=NoticesOut, auth=MEMBER)
async def my_notices(call: Call[None, MerchantPath]) -> NoticesOut:
    """The member's recent notices, newest first."""
    rows = await views.member_notices(call.merchant.id, call.member.id)
    return NoticesOut(items=[_notice(row) for row in rows])


class SettingOut(Out):
    kind: str
    label: str
    urgent: bool
    customised: bool
    settings: dict[str, Any]
    sample: dict[str, Any] = Field(description="the data this notice is given (what texts may use)")


class SettingsOut(Out):
    items: list[SettingOut]
    quiet_start: str
    quiet_end: str


class KindPath(In):
    kind: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$", examples=["purchase_receipt"])]


def _setting(found: notice_settings.Setting) -> SettingOut:
    kind = found.kind
    return SettingOut(
        kind=kind.code,
        label=kind.label,
        urgent=kind.urgent,
        customised=found.customised,
        settings=found.as_dict(),
        sample=kind.sample,
    )


@routes.get("/api/admin/notices/settings", response=SettingsOut, auth=MANAGER)
async def list_settings(call: Call[None, None]) -> SettingsOut:
    """Every notice kind with the merchant's settings (or the defaults) and the quiet hours."""
    start, end = call.merchant.quiet_hours
    found = await notice_settings.all_settings(call.merchant.id)
    return SettingsOut(
        items=[_setting(s) for s in found],
        quiet_start=start.strftime("%H:%M"),
        quiet_end=end.strftime("%H:%M"),
    )


Text = Annotated[str, Field(max_length=notice_settings.MAX_BODY)]


class SettingIn(In):
    """The settings to change (the others keep their current values)."""

    enabled: bool | None = None
    channels: Annotated[list[str], Field(max_length=3, description="template, subscribe, custom")] | None = (
        None
    )
    template_id: Annotated[str, Field(max_length=64)] | None = None
    template_fields: dict[str, Annotated[str, Field(max_length=notice_settings.MAX_EXPRESSION)]] | None = None
    template_url: Annotated[str, Field(max_length=1000)] | None = None
    subscribe_template_id: Annotated[str, Field(max_length=64)] | None = None
    subscribe_fields: dict[str, Annotated[str, Field(max_length=notice_settings.MAX_EXPRESSION)]] | None = (
        None
    )
    subscribe_page: Annotated[str, Field(max_length=128)] | None = None
    body: Text | None = None


@routes.put(
    "/api/admin/notices/settings/{kind}",
    path_model=KindPath,
    body=SettingIn,
    response=SettingOut,
    auth=ADMIN,
    errors=(400, 404),
)
async def save_setting(call: Call[SettingIn, KindPath]) -> SettingOut:
    """Change one notice kind's settings; every text and field is checked against its sample data."""
    current = (await notice_settings.setting(call.merchant.id, call.path.kind)).as_dict()
    changes = call.body.model_dump(exclude_unset=True)
    saved = await notice_settings.save(
        call.merchant, call.path.kind, {**current, **changes}, actor=f"staff:{call.staff.id}"
    )
    return _setting(saved)


@routes.delete(
    "/api/admin/notices/settings/{kind}", path_model=KindPath, response=SettingOut, auth=ADMIN, errors=(404,)
)
async def reset_setting(call: Call[None, KindPath]) -> SettingOut:
    """Back to the built-in defaults for this kind."""
    return _setting(
        await notice_settings.reset(call.merchant, call.path.kind, actor=f"staff:{call.staff.id}")
    )


Clock = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["22:00"])]


class QuietIn(In):
    start: Clock
    end: Clock


@routes.put("/api/admin/notices/quiet-hours", body=QuietIn, auth=ADMIN, errors=(400,))
async def quiet_hours(call: Call[QuietIn, None]) -> None:
    """Merchant-local hours in which notices that are not urgent wait (start == end: none)."""
    start, end = time.fromisoformat(call.body.start), time.fromisoformat(call.body.end)
    await notice_settings.set_quiet_hours(call.merchant, start, end, actor=f"staff:{call.staff.id}")


class DeliveryOut(Out):
    id: int
    kind: str
    label: str
    event_key: str
    status: str
    channel: str | None
    reason: str
    errcode: int | None
    msgid: str | None
    job_status: str
    text: str
    created_at: datetime
    sent_at: datetime | None


class DeliveriesOut(Out):
    items: list[DeliveryOut]
    next_before: int | None


class MemberPath(In):
    member_id: Annotated[int, Field(ge=1, le=2**31 - 1)]


class PageQuery(In):
    before: Annotated[int, Field(ge=1)] | None = None
    limit: Annotated[int, Field(ge=1, le=views.MAX_PAGE)] = 50


@routes.get(
    "/api/admin/members/{member_id}/notices",
    path_model=MemberPath,
    response=DeliveriesOut,
    auth=MANAGER,
    errors=(404,),
)
async def member_deliveries(call: Call[None, MemberPath]) -> DeliveriesOut:
    """One member's delivery records, newest first (?before=<next_before>&limit=1..100)."""
    member = await members.resolve(call.merchant, member_id=call.path.member_id)
    page = query(call.request, PageQuery)
    rows = await views.deliveries(call.merchant.id, member.id, before=page.before, limit=page.limit)
    items = [delivery_out(r) for r in rows]
    return DeliveriesOut(items=items, next_before=rows[-1].id if len(rows) == page.limit else None)


def delivery_out(row: NoticeDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        kind=row.kind,
        label=views.label(row.kind),
        event_key=row.event_key,
        status=row.status,
        channel=row.channel,
        reason=row.reason,
        errcode=row.errcode,
        msgid=row.msgid,
        job_status=row.job_status,
        text=row.text,
        created_at=row.created_at,
        sent_at=row.sent_at,
    )


class StatsQuery(In):
    days: Annotated[int, Field(ge=1, le=366)] = 30


class CountOut(Out):
    kind: str
    label: str
    status: str
    count: int


class StatsOut(Out):
    since: datetime
    until: datetime
    counts: list[CountOut]
    kinds: list[str] = Field(description="every notice kind there is")


@routes.get("/api/admin/notices/stats", response=StatsOut, auth=MANAGER, errors=(400,))
async def stats(call: Call[None, None]) -> StatsOut:
    """Notices per kind and outcome over the last `days` days (?days=1..366, default 30)."""
    until = datetime.now(UTC)
    since = until - timedelta(days=query(call.request, StatsQuery).days)
    found = await views.counts(call.merchant.id, since=since, until=until)
    return StatsOut(
        since=since,
        until=until,
        kinds=list(KINDS),
        counts=[CountOut(kind=c.kind, label=c.label, status=c.status, count=c.count) for c in found],
    )
