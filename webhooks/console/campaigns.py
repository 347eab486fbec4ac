"""Console pages of campaigns: the list, a draft's form (channel, text, audience segment, holdout,
attachments), its preview for a sample member and audience size, validation, a test send, starting it,
a progress bar while it sends (htmx polling the campaign's counts), pause / resume / cancel, and the
report with the holdout uplift. Every step is the campaigns API's handler for the same action."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.core.errors import DomainError, ErrorCode
from models.staff import StaffRole
from webhooks import admin_campaigns, admin_segments, coupons
from webhooks.api import ApiError
from webhooks.console.base import FormErrors, api, form, page, parse, present, redirect, render, whole_number
from webhooks.console.security import Console

routes = web.RouteTableDef()
CHANNELS = {"mass": "公众号群发", "custom": "客服消息", "subscribe": "小程序订阅消息", "sms": "短信"}
STATES = {
    "draft": "草稿",
    "scheduled": "已排期",
    "sending": "发送中",
    "paused": "已暂停",
    "done": "已完成",
    "cancelled": "已取消",
}
ACTIONS = {
    "validate": admin_campaigns.validate_campaign,
    "pause": admin_campaigns.pause_campaign,
    "resume": admin_campaigns.resume_campaign,
    "cancel": admin_campaigns.cancel_campaign,
}


FIELDS = (
    "name",
    "channel",
    "text",
    "segment_id",
    "holdout_pct",
    "attach_coupon_template_id",
    "attach_points",
    "conversion_days",
    "template_id",
)


def progress(counts: dict[str, int]) -> dict[str, int]:
    """How far a send is: recipients done (sent, failed, skipped) of those to message (the holdout aside)."""
    total = sum(v for k, v in counts.items() if k != "holdout")
    left = counts.get("pending", 0) + counts.get("sending", 0)
    done = total - left
    return {"total": total, "done": done, "percent": 100 * done // total if total else 0}


def campaign_body(data: dict[str, str]) -> dict[str, Any]:
    values = present(data, *FIELDS)
    body: dict[str, Any] = {
        "name": values.get("name", ""),
        "channel": values.get("channel", "mass"),
        "content": {"text": data.get("text", "")},
        "template_id": values.get("template_id", ""),
        "segment_id": whole_number(values["segment_id"]) if "segment_id" in values else None,
    }
    for name in ("holdout_pct", "attach_points", "conversion_days", "attach_coupon_template_id"):
        if name in values:
            body[name] = whole_number(values[name])
    return body


async def _list_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    campaigns = await api(request, console, admin_campaigns.list_campaigns)
    context = {
        "campaigns": campaigns.items,
        "segments": (await api(request, console, admin_segments.list_segments)).items,
        "templates": (await api(request, console, coupons.list_templates)).items,
        "channels": CHANNELS,
        "states": STATES,
        "progress": progress,
        "errors": errors or {},
        "values": values or {},
    }
    return render(request, "campaigns.html", console, context, status=status, section="campaigns")


@routes.get("/admin/campaigns")
@page()
async def campaigns(request: web.Request, console: Console) -> web.StreamResponse:
    return await _list_page(request, console)


@routes.post("/admin/campaigns")
@page()
async def create(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    try:
        body = parse(admin_campaigns.CampaignIn, campaign_body(data))
        created = await api(request, console, admin_campaigns.create_campaign, body=body)
    except (FormErrors, DomainError, ApiError) as exc:
        if isinstance(exc, ApiError) and exc.status == 403:
            raise
        errors = exc.errors if isinstance(exc, FormErrors) else FormErrors.of(exc).errors
        return await _list_page(request, console, errors=errors, values=data, status=400)
    return redirect(request, f"/admin/campaigns/{created.id}")


def _path(request: web.Request) -> admin_campaigns.CampaignPath:
    raw = request.match_info["campaign_id"]
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        raise ApiError(404, ErrorCode.NOT_FOUND, "活动不存在")
    return admin_campaigns.CampaignPath(campaign_id=int(raw))


async def _detail(
    request: web.Request, console: Console, *, error: str = "", notice: str = "", status: int = 200
) -> web.Response:
    path = _path(request)
    campaign = await api(request, console, admin_campaigns.get_campaign, path=path)
    preview = None
    try:
        preview = await api(request, console, admin_campaigns.preview_campaign, path=path)
    except DomainError as exc:
        error = error or exc.message
    report = None
    if campaign.state in ("sending", "paused", "done", "cancelled"):
        report = await api(request, console, admin_campaigns.campaign_report, path=path)
    context = {
        "c": campaign,
        "preview": preview,
        "report": report,
        "progress": progress(campaign.counts),
        "channels": CHANNELS,
        "states": STATES,
        "error": error,
        "notice": notice,
    }
    template = "campaign_progress.html" if request.headers.get("HX-Request") == "true" else "campaign.html"
    return render(request, template, console, context, status=status, section="campaigns")


@routes.get(r"/admin/campaigns/{campaign_id:\d+}")
@page()
async def detail(request: web.Request, console: Console) -> web.StreamResponse:
    """The campaign: its settings, the sample member's message, the actions its state allows, the
    progress while it sends (polled), and the report."""
    return await _detail(request, console, notice=request.query.get("notice", ""))


@routes.post(r"/admin/campaigns/{campaign_id:\d+}/{action:validate|pause|resume|cancel}")
@page()
async def act(request: web.Request, console: Console) -> web.StreamResponse:
    path, action = _path(request), request.match_info["action"]
    try:
        await api(request, console, ACTIONS[action], path=path)
    except (DomainError, ApiError) as exc:
        if isinstance(exc, ApiError) and exc.status in (403, 404):
            raise
        return await _detail(request, console, error=exc.message, status=400)
    notices = {
        "validate": "检查通过，可以发送。",
        "pause": "已暂停。",
        "resume": "已继续发送。",
        "cancel": "已取消。",
    }
    return redirect(request, f"/admin/campaigns/{path.campaign_id}?notice={notices[action]}")


@routes.post(r"/admin/campaigns/{campaign_id:\d+}/start")
@page(StaffRole.ADMIN)
async def start(request: web.Request, console: Console) -> web.StreamResponse:
    """Start a validated campaign now."""
    path = _path(request)
    try:
        body = parse(admin_campaigns.ScheduleIn, {})
        await api(request, console, admin_campaigns.schedule_campaign, body=body, path=path)
    except (DomainError, ApiError) as exc:
        if isinstance(exc, ApiError) and exc.status in (403, 404):
            raise
        return await _detail(request, console, error=exc.message, status=400)
    return redirect(request, f"/admin/campaigns/{path.campaign_id}")


@routes.post(r"/admin/campaigns/{campaign_id:\d+}/test-send")
@page(StaffRole.ADMIN)
async def test_send(request: web.Request, console: Console) -> web.StreamResponse:
    """Send the sample member's message to one staff recipient (an openid or a phone)."""
    path = _path(request)
    data = await form(request)
    try:
        body = parse(admin_campaigns.TestSendIn, {"to": data.get("to", "").strip()})
        await api(request, console, admin_campaigns.test_send_campaign, body=body, path=path)
    except (FormErrors, DomainError, ApiError) as exc:
        if isinstance(exc, ApiError) and exc.status in (403, 404):
            raise
        message = next(iter(exc.errors.values())) if isinstance(exc, FormErrors) else exc.message
        return await _detail(request, console, error=message, status=400)
    return await _detail(request, console, notice="测试消息已发送。")
