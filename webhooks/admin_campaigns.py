"""Admin JSON API: campaigns and journeys — create, edit, validate, preview, test send, schedule, pause,
resume, cancel, the live counts and the report, the recipient list as CSV; the marketing caps.

Managers prepare campaigns (create, edit, validate, preview, read); sending anything — a test send,
scheduling, resuming, switching a journey on or editing one — and stopping it are for admins. Every
change is in the audit log (`handlers.campaigns.manage`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from handlers.campaigns import journeys, manage, report
from handlers.campaigns.journeys import JourneyDraft
from handlers.campaigns.manage import Draft
from handlers.campaigns.sending import CampaignServices
from handlers.rules.campaigns import Caps
from handlers.staff.auth import has_role
from models.campaign import Campaign, Journey, MarketingCaps
from models.staff import StaffRole
from webhooks.api import Call, In, IntId, Line, Out, Routes
from webhooks.appkeys import REDIS, SMS, WECHAT
from webhooks.auth import ADMIN, MANAGER

log = logging.getLogger(__name__)
routes = Routes("campaigns")
CSV = "text/csv; charset=utf-8"


class CampaignPath(In):
    campaign_id: IntId


class JourneyPath(In):
    journey_id: IntId


class CampaignIn(In):
    """A campaign's settings (all of them, on create and on each edit of a draft)."""

    name: Annotated[Line, Field(min_length=1, max_length=64)]
    channel: str = Field(description="mass (OA 群发), subscribe (mini-program), custom (客服消息) or sms")
    content: dict[str, Any] = Field(
        description="mass/custom: {text}; mass may add wechat_tag_id; subscribe: {fields: {thing1: …}, "
        "page}; sms: {params: […]}. jinja2 with member_name, member_code, points, merchant_name, "
        "campaign_name"
    )
    template_id: Annotated[Line, Field(max_length=64)] = Field("", description="subscribe / SMS template")
    segment_id: IntId | None = Field(None, description="the audience; null: every member")
    throttle_per_second: int = Field(50, ge=1, le=manage.MAX_THROTTLE)
    holdout_pct: int = Field(10, ge=0, le=50, description="share of the audience never messaged (0: none)")
    attach_coupon_template_id: IntId | None = None
    attach_points: int = Field(0, ge=0, le=manage.MAX_POINTS)
    conversion_days: int = Field(7, ge=1, le=90, description="purchases within this many days count")

    def draft(self) -> Draft:
        return Draft(**self.model_dump())


class CampaignOut(Out):
    id: int
    name: str
    channel: str
    state: str
    content: dict[str, Any]
    template_id: str
    segment_id: int | None
    throttle_per_second: int
    holdout_pct: int
    attach_coupon_template_id: int | None
    attach_points: int
    conversion_days: int
    validated_at: datetime | None
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int] = Field(
        description="recipients by status: pending, sending, sent, failed, skipped, holdout"
    )


class CampaignsOut(Out):
    items: list[CampaignOut]


class PreviewOut(Out):
    audience: int = Field(description="members in the audience now (before the holdout and the governor)")
    holdout_pct: int
    shown: str = Field(description="the message as the sample member would read it")
    fields: dict[str, str] | None = None
    params: list[str] = Field(default_factory=list)
    sample: dict[str, Any]


class TestSendIn(In):
    to: Annotated[Line, Field(min_length=1, max_length=64)] = Field(
        description="a staff member's OA openid (mass, custom), mp openid (subscribe) or phone (sms)"
    )


class ScheduleIn(In):
    at: datetime | None = Field(None, description="when to start (with offset); null or past: now")


class GroupOut(Out):
    members: int
    converted: int
    conversion: float | None
    orders: int
    revenue_fen: int


class ReportOut(Out):
    counts: dict[str, int]
    reasons: dict[str, int] = Field(description="why recipients were skipped or failed, most frequent first")
    messaged: GroupOut
    holdout: GroupOut
    uplift: float | None = Field(description="messaged conversion minus holdout conversion")
    uplift_low: float | None = Field(description="95% confidence interval, low end")
    uplift_high: float | None
    coupons_issued: int
    coupons_redeemed: int
    coupon_discount_fen: int


class CapsIn(In):
    marketing_per_day: int = Field(
        1, ge=1, le=10, description="campaign messages per member per day, all channels"
    )
    sms_per_day: int = Field(1, ge=1, le=10)


class CapsOut(Out):
    marketing_per_day: int
    sms_per_day: int


class JourneyIn(In):
    name: Annotated[Line, Field(min_length=1, max_length=64)]
    trigger: str = Field(description="enters_segment, days_after_registration or days_after_first_purchase")
    days: int = Field(0, ge=0, le=365)
    segment_id: IntId | None = None
    message: CampaignIn


class JourneyOut(Out):
    id: int
    name: str
    trigger: str
    days: int
    segment_id: int | None
    active: bool
    active_since: datetime | None
    campaign: CampaignOut


class JourneysOut(Out):
    items: list[JourneyOut]


def _actor(call: Call[Any, Any]) -> str:
    return f"staff:{call.staff.id}"


async def campaign_out(campaign: Campaign) -> CampaignOut:
    values = {name: getattr(campaign, name) for name in CampaignOut.model_fields if name != "counts"}
    values["channel"], values["state"] = campaign.channel.value, campaign.state.value
    return CampaignOut(**values, counts=await report.counts(campaign.id))


def _preview_out(preview: manage.Preview) -> PreviewOut:
    return PreviewOut(
        audience=preview.audience,
        holdout_pct=preview.holdout_pct,
        shown=preview.rendered.shown,
        fields=dict(preview.rendered.fields) if preview.rendered.fields is not None else None,
        params=list(preview.rendered.params),
        sample=preview.sample,
    )


def _now() -> datetime:
    return datetime.now(UTC)


@routes.get("/api/admin/campaigns", response=CampaignsOut, auth=MANAGER)
async def list_campaigns(call: Call[None, None]) -> CampaignsOut:
    """The merchant's campaigns, newest first (journeys' messages are under /api/admin/journeys)."""
    found = await Campaign.filter(merchant_id=call.merchant.id, journey_id=None).order_by("-id").limit(200)
    return CampaignsOut(items=[await campaign_out(c) for c in found])


@routes.post(
    "/api/admin/campaigns", body=CampaignIn, response=CampaignOut, status=201, auth=MANAGER, errors=(400,)
)
async def create_campaign(call: Call[CampaignIn, None]) -> CampaignOut:
    """A draft campaign (its content's shape is checked; validate it before scheduling)."""
    return await campaign_out(await manage.create(call.merchant, call.body.draft(), actor=_actor(call)))


@routes.get("/api/admin/campaigns/{campaign_id}", path_model=CampaignPath, response=CampaignOut, auth=MANAGER)
async def get_campaign(call: Call[None, CampaignPath]) -> CampaignOut:
    """One campaign with its live counts (they move while it sends)."""
    return await campaign_out(await manage.get(call.merchant, call.path.campaign_id))


@routes.put(
    "/api/admin/campaigns/{campaign_id}",
    path_model=CampaignPath,
    body=CampaignIn,
    response=CampaignOut,
    auth=MANAGER,
    errors=(400, 409),
)
async def put_campaign(call: Call[CampaignIn, CampaignPath]) -> CampaignOut:
    """Replace a draft's settings (409 once it is scheduled); it must be validated again."""
    campaign = await manage.update(
        call.merchant, call.path.campaign_id, call.body.draft(), actor=_actor(call)
    )
    return await campaign_out(campaign)


@routes.post(
    "/api/admin/campaigns/{campaign_id}/validate",
    path_model=CampaignPath,
    response=PreviewOut,
    auth=MANAGER,
    errors=(400,),
)
async def validate_campaign(call: Call[None, CampaignPath]) -> PreviewOut:
    """Render the content for a sample member and check it against the channel (400 naming the part);
    passing it lets the draft be scheduled."""
    preview = await manage.validate(call.merchant, call.path.campaign_id, actor=_actor(call), now=_now())
    return _preview_out(preview)


@routes.get(
    "/api/admin/campaigns/{campaign_id}/preview",
    path_model=CampaignPath,
    response=PreviewOut,
    auth=MANAGER,
    errors=(400,),
)
async def preview_campaign(call: Call[None, CampaignPath]) -> PreviewOut:
    """The audience's size and the message as a sample member reads it."""
    return _preview_out(await manage.preview(call.merchant, call.path.campaign_id))


@routes.post(
    "/api/admin/campaigns/{campaign_id}/test-send",
    path_model=CampaignPath,
    body=TestSendIn,
    response=PreviewOut,
    auth=ADMIN,
    errors=(400,),
)
async def test_send_campaign(call: Call[TestSendIn, CampaignPath]) -> PreviewOut:
    """Send the content, rendered for a sample member, to one staff member (no member budget used)."""
    app = call.request.app
    services = CampaignServices(app[WECHAT], app[REDIS], app[SMS])
    rendered = await manage.test_send(
        call.merchant, call.path.campaign_id, services, to=call.body.to, actor=_actor(call)
    )
    preview = await manage.preview(call.merchant, call.path.campaign_id)
    return _preview_out(manage.Preview(preview.audience, preview.holdout_pct, rendered, preview.sample))


@routes.post(
    "/api/admin/campaigns/{campaign_id}/schedule",
    path_model=CampaignPath,
    body=ScheduleIn,
    body_required=False,
    response=CampaignOut,
    auth=ADMIN,
    errors=(409,),
)
async def schedule_campaign(call: Call[ScheduleIn, CampaignPath]) -> CampaignOut:
    """Schedule a validated draft (409 otherwise); without `at`, or `at` in the past, it starts now."""
    at = call.body.at if call.body is not None else None
    campaign = await manage.schedule(
        call.merchant, call.path.campaign_id, call.effects, at=at, actor=_actor(call), now=_now()
    )
    return await campaign_out(campaign)


@routes.post(
    "/api/admin/campaigns/{campaign_id}/pause",
    path_model=CampaignPath,
    response=CampaignOut,
    auth=ADMIN,
    errors=(409,),
)
async def pause_campaign(call: Call[None, CampaignPath]) -> CampaignOut:
    """Stop sending at the next batch (409 unless sending)."""
    return await campaign_out(
        await manage.pause(call.merchant, call.path.campaign_id, actor=_actor(call), now=_now())
    )


@routes.post(
    "/api/admin/campaigns/{campaign_id}/resume",
    path_model=CampaignPath,
    response=CampaignOut,
    auth=ADMIN,
    errors=(409,),
)
async def resume_campaign(call: Call[None, CampaignPath]) -> CampaignOut:
    """Go on with a paused campaign where it stopped (409 unless paused)."""
    campaign = await manage.resume(
        call.merchant, call.path.campaign_id, call.effects, actor=_actor(call), now=_now()
    )
    return await campaign_out(campaign)


@routes.post(
    "/api/admin/campaigns/{campaign_id}/cancel",
    path_model=CampaignPath,
    response=CampaignOut,
    auth=ADMIN,
    errors=(409,),
)
async def cancel_campaign(call: Call[None, CampaignPath]) -> CampaignOut:
    """Stop for good: members not reached yet are skipped (`cancelled`); 409 once done."""
    return await campaign_out(
        await manage.cancel(call.merchant, call.path.campaign_id, actor=_actor(call), now=_now())
    )


def _group(group: report.Group) -> GroupOut:
    rate = group.converted / group.members if group.members else None
    return GroupOut(
        members=group.members,
        converted=group.converted,
        conversion=rate,
        orders=group.orders,
        revenue_fen=group.revenue_fen,
    )


@routes.get(
    "/api/admin/campaigns/{campaign_id}/report", path_model=CampaignPath, response=ReportOut, auth=MANAGER
)
async def campaign_report(call: Call[None, CampaignPath]) -> ReportOut:
    """Delivery counts and why members were skipped; conversion (completed purchases within the
    campaign's days) of the messaged group against the holdout, the uplift with its 95% interval;
    coupon redemptions of the attachment."""
    found = await report.report(await manage.get(call.merchant, call.path.campaign_id))
    return ReportOut(
        counts=found.counts,
        reasons=found.reasons,
        messaged=_group(found.messaged),
        holdout=_group(found.holdout),
        uplift=found.uplift.uplift,
        uplift_low=found.uplift.low,
        uplift_high=found.uplift.high,
        coupons_issued=found.coupons_issued,
        coupons_redeemed=found.coupons_redeemed,
        coupon_discount_fen=found.coupon_discount_fen,
    )


@routes.get(
    "/api/admin/campaigns/{campaign_id}/recipients.csv", path_model=CampaignPath, media=CSV, auth=MANAGER
)
async def campaign_recipients(call: Call[None, CampaignPath]) -> web.StreamResponse:
    """Every recipient with their outcome (member code, status, reason, errcode, msgid, attempts, sent
    at), streamed as CSV."""
    campaign = await manage.get(call.merchant, call.path.campaign_id)
    response = web.StreamResponse(
        headers={
            "Content-Type": CSV,
            "Content-Disposition": f'attachment; filename="campaign-{campaign.id}-recipients.csv"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(call.request)
    try:
        async for chunk in report.recipients_csv(campaign.id):
            await response.write(chunk)
    except Exception:  # the status line is sent: cut the download rather than end it looking complete
        log.exception("campaign recipient export failed", extra={"campaign": campaign.id})
        if call.request.transport is not None:
            call.request.transport.close()
        return response
    await response.write_eof()
    return response


@routes.get("/api/admin/marketing-caps", response=CapsOut, auth=MANAGER)
async def get_caps(call: Call[None, None]) -> CapsOut:
    """The merchant's marketing budgets per member (defaults: one campaign message a day, one SMS)."""
    row = await MarketingCaps.get_or_none(merchant_id=call.merchant.id)
    caps = Caps() if row is None else Caps(row.marketing_per_day, sms_per_day=row.sms_per_day)
    return CapsOut(marketing_per_day=caps.marketing_per_day, sms_per_day=caps.sms_per_day)


@routes.put("/api/admin/marketing-caps", body=CapsIn, response=CapsOut, auth=ADMIN, errors=(400,))
async def put_caps(call: Call[CapsIn, None]) -> CapsOut:
    """Set the budgets (audited)."""
    await manage.set_caps(
        call.merchant,
        marketing_per_day=call.body.marketing_per_day,
        sms_per_day=call.body.sms_per_day,
        actor=_actor(call),
    )
    return CapsOut(marketing_per_day=call.body.marketing_per_day, sms_per_day=call.body.sms_per_day)


# Journeys ---------------------------------------------------------------------------------------------


async def journey_out(journey: Journey) -> JourneyOut:
    return JourneyOut(
        id=journey.id,
        name=journey.name,
        trigger=journey.trigger.value,
        days=journey.days,
        segment_id=journey.segment_id,
        active=journey.active,
        active_since=journey.active_since,
        campaign=await campaign_out(await Campaign.get(id=journey.campaign_id)),
    )


@routes.get("/api/admin/journeys", response=JourneysOut, auth=MANAGER)
async def list_journeys(call: Call[None, None]) -> JourneysOut:
    """The merchant's journeys with their message and its counts."""
    found = await Journey.filter(merchant_id=call.merchant.id).order_by("-id").limit(200)
    return JourneysOut(items=[await journey_out(j) for j in found])


@routes.post(
    "/api/admin/journeys", body=JourneyIn, response=JourneyOut, status=201, auth=MANAGER, errors=(400,)
)
async def create_journey(call: Call[JourneyIn, None]) -> JourneyOut:
    """A journey, switched off: a trigger and the message sent once per member."""
    body = call.body
    draft = JourneyDraft(body.name, body.trigger, body.days, body.segment_id, body.message.draft())
    return await journey_out(await journeys.create(call.merchant, draft, actor=_actor(call)))


@routes.get("/api/admin/journeys/{journey_id}", path_model=JourneyPath, response=JourneyOut, auth=MANAGER)
async def get_journey(call: Call[None, JourneyPath]) -> JourneyOut:
    """One journey and its message's counts."""
    return await journey_out(await journeys.get(call.merchant, call.path.journey_id))


@routes.put(
    "/api/admin/journeys/{journey_id}",
    path_model=JourneyPath,
    body=JourneyIn,
    response=JourneyOut,
    auth=MANAGER,
    errors=(400, 403, 404, 409),
)
async def edit_journey(call: Call[JourneyIn, JourneyPath]) -> JourneyOut:
    """Replace a journey's name, trigger and message (checked as on creation). Members already sent
    are never sent again; on a journey that is on, a new trigger counts from now and the channel stays.
    Managers edit a journey that is off, as they create one; only admins one that is on (403)."""
    body = call.body
    draft = JourneyDraft(body.name, body.trigger, body.days, body.segment_id, body.message.draft())
    journey = await journeys.update(
        call.merchant,
        call.path.journey_id,
        draft,
        actor=_actor(call),
        now=_now(),
        live_allowed=has_role(call.staff.role, StaffRole.ADMIN),
    )
    return await journey_out(journey)


@routes.post(
    "/api/admin/journeys/{journey_id}/activate",
    path_model=JourneyPath,
    response=JourneyOut,
    auth=ADMIN,
    errors=(400, 409),
)
async def activate_journey(call: Call[None, JourneyPath]) -> JourneyOut:
    """Switch a journey on (content checked first): events from now on trigger it."""
    journey = await journeys.set_active(
        call.merchant, call.path.journey_id, True, actor=_actor(call), now=_now()
    )
    return await journey_out(journey)


@routes.post(
    "/api/admin/journeys/{journey_id}/deactivate",
    path_model=JourneyPath,
    response=JourneyOut,
    auth=ADMIN,
    errors=(409,),
)
async def deactivate_journey(call: Call[None, JourneyPath]) -> JourneyOut:
    """Switch a journey off."""
    journey = await journeys.set_active(
        call.merchant, call.path.journey_id, False, actor=_actor(call), now=_now()
    )
    return await journey_out(journey)


@routes.delete("/api/admin/journeys/{journey_id}", path_model=JourneyPath, auth=ADMIN, errors=(404, 409))
async def delete_journey(call: Call[None, JourneyPath]) -> None:
    """Delete a journey that is switched off (409 while it is on). Its message's campaign is cancelled
    and kept with its recipient records (they still count against the marketing caps); the segment it
    triggered on is no longer in use by it."""
    await journeys.delete(call.merchant, call.path.journey_id, actor=_actor(call), now=_now())
