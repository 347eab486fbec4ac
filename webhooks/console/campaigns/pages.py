"""Console pages of campaigns: the list and the new-draft form with each channel's fields (swapped in by
htmx when the channel changes), a draft's page (edit, preview for a sample member, audience size, check,
test send, start now or at a time), the progress bar while it sends (htmx polling the counts), pause /
resume / cancel, and the report with the holdout uplift. Every step is the campaigns API's handler.

Saving the form saves and checks in one transaction (create or edit, then the API's validate step for a
sample member): content that does not fit its channel ("关键词 thing1 的内容超过 20 个字") is shown next to
its field with the input kept, and nothing is saved.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from tortoise.transactions import in_transaction

from handlers.core.errors import DomainError, ErrorCode
from models.staff import StaffRole
from webhooks import admin_campaigns, admin_segments, coupons
from webhooks.api import ApiError
from webhooks.console.base import api, form, page, parse, redirect, render, submit
from webhooks.console.campaigns.form import (
    CHANNELS,
    DEFAULTS,
    KEYWORD_ROWS,
    SMS_PARAMS,
    STATES,
    campaign_body,
    channel_of,
    form_errors,
    form_values,
    local_moment,
    progress,
)
from webhooks.console.security import Console

routes = web.RouteTableDef()
ACTIONS = {
    "validate": admin_campaigns.validate_campaign,
    "pause": admin_campaigns.pause_campaign,
    "resume": admin_campaigns.resume_campaign,
    "cancel": admin_campaigns.cancel_campaign,
}
NOTICES = {
    "validate": "检查通过，可以发送。",
    "pause": "已暂停。",
    "resume": "已继续发送。",
    "cancel": "已取消。",
}


async def choices(request: web.Request, console: Console) -> dict[str, Any]:
    """What the campaign form offers: segments (with their WeChat tag) and active coupon templates."""
    segments = (await api(request, console, admin_segments.list_segments)).items
    templates = (await api(request, console, coupons.list_templates)).items
    return {
        "segments": segments,
        "templates": [t for t in templates if t.active],
        "channels": CHANNELS,
        "keyword_rows": KEYWORD_ROWS,
        "sms_params": SMS_PARAMS,
    }


def _first(errors: dict[str, str]) -> str:
    """One refusal's message (an action has one field, or none)."""
    return next(iter(errors.values()), "")


def tags_of(context: dict[str, Any]) -> dict[int, int | None]:
    return {s.id: s.wechat_tag_id for s in context["segments"]}


async def save(
    request: web.Request,
    console: Console,
    data: dict[str, str],
    tags: dict[int, int | None],
    campaign_id: int,
) -> Any:
    """Create (`campaign_id` 0) or edit a draft and check it for a sample member, all or nothing."""
    body = parse(admin_campaigns.CampaignIn, campaign_body(data, tags))
    async with in_transaction():
        if campaign_id:
            path = admin_campaigns.CampaignPath(campaign_id=campaign_id)
            saved = await api(request, console, admin_campaigns.put_campaign, body=body, path=path)
        else:
            saved = await api(request, console, admin_campaigns.create_campaign, body=body)
        path = admin_campaigns.CampaignPath(campaign_id=saved.id)
        await api(request, console, admin_campaigns.validate_campaign, path=path)
    return saved


async def _list_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    context = await choices(request, console)
    context.update(
        campaigns=(await api(request, console, admin_campaigns.list_campaigns)).items,
        states=STATES,
        progress=progress,
        errors=errors or {},
        values=values or {"channel": "mass", **DEFAULTS},
        action="/admin/campaigns",
        submit="保存草稿",
    )
    return render(request, "campaigns.html", console, context, status=status, section="campaigns")


@routes.get("/admin/campaigns")
@page()
async def campaigns(request: web.Request, console: Console) -> web.StreamResponse:
    return await _list_page(request, console)


@routes.get("/admin/campaigns/fields")
@page()
async def channel_fields(request: web.Request, console: Console) -> web.StreamResponse:
    """The chosen channel's fields (htmx swaps them in when the channel select changes), keeping what
    was typed in the fields both channels share."""
    values = {name: value for name, value in request.query.items() if name != "csrf_token"}
    if values.get("shown") != channel_of(values):  # a subscribe template id is no SMS template id
        values.pop("template_id", None)
    context = await choices(request, console)
    context.update(values={**values, "channel": channel_of(values)}, errors={})
    return render(request, "campaign_fields.html", console, context, section="campaigns")


@routes.post("/admin/campaigns")
@page()
async def create(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    tags = tags_of(await choices(request, console))

    async def attempt() -> web.StreamResponse:
        created = await save(request, console, data, tags, 0)
        return redirect(request, f"/admin/campaigns/{created.id}?notice=草稿已保存，检查通过。")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        errors = form_errors(errors, data)
        return await _list_page(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused)


def _path(request: web.Request) -> admin_campaigns.CampaignPath:
    raw = request.match_info["campaign_id"]
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        raise ApiError(404, ErrorCode.NOT_FOUND, "活动不存在")
    return admin_campaigns.CampaignPath(campaign_id=int(raw))


async def _detail(
    request: web.Request,
    console: Console,
    *,
    error: str = "",
    notice: str = "",
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    kept: dict[str, str] | None = None,
    refusal: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    """The campaign's page (`values`: the edit form as typed; `kept`: the other inputs as typed;
    `refusal`: the API's errors about the saved draft, shown next to its form's fields)."""
    path = _path(request)
    campaign = await api(request, console, admin_campaigns.get_campaign, path=path)
    if errors and campaign.state != "draft":  # no form to show them beside (e.g. edited once started)
        error = error or next(iter(errors.values()))
    polled = request.headers.get("HX-Request") == "true" and request.method == "GET"
    preview = report = None
    if not polled:
        try:
            preview = await api(request, console, admin_campaigns.preview_campaign, path=path)
        except DomainError as exc:
            error = error or exc.message
    if campaign.state in ("sending", "paused", "done", "cancelled"):
        report = await api(request, console, admin_campaigns.campaign_report, path=path)
    context: dict[str, Any] = {
        "c": campaign,
        "preview": preview,
        "report": report,
        "progress": progress(campaign.counts),
        "channels": CHANNELS,
        "states": STATES,
        "error": error,
        "notice": notice,
    }
    if polled:
        seen = request.query.get("seen", "")
        if seen and seen != campaign.state:  # started, finished…: the page's actions change with it
            return web.Response(status=204, headers={"HX-Refresh": "true"})
        return render(request, "campaign_progress.html", console, context, section="campaigns")
    context.update(await choices(request, console))
    shown = {**(values or form_values(campaign)), **(kept or {})}
    context.update(
        errors={**form_errors(refusal or {}, shown), **(errors or {})},
        values=shown,
        action=f"/admin/campaigns/{campaign.id}",
        submit="保存修改",
    )
    return render(request, "campaign.html", console, context, status=status, section="campaigns")


@routes.get(r"/admin/campaigns/{campaign_id:\d+}")
@page()
async def detail(request: web.Request, console: Console) -> web.StreamResponse:
    """The campaign: its settings (editable while a draft), the sample member's message, the actions
    its state allows, the progress while it sends (polled), and the report."""
    return await _detail(request, console, notice=request.query.get("notice", ""))


@routes.get(r"/admin/campaigns/{campaign_id:\d+}/recipients.csv")
@page()
async def recipients(request: web.Request, console: Console) -> web.StreamResponse:
    """Every recipient with their outcome (status, reason, errcode, sent at) as CSV: the API's export."""
    path = _path(request)
    export: web.StreamResponse = await api(request, console, admin_campaigns.campaign_recipients, path=path)
    return export


@routes.post(r"/admin/campaigns/{campaign_id:\d+}")
@page()
async def edit(request: web.Request, console: Console) -> web.StreamResponse:
    """Save a draft's new settings and check them again (the input is kept when refused)."""
    path, data = _path(request), await form(request)
    tags = tags_of(await choices(request, console))

    async def attempt() -> web.StreamResponse:
        await save(request, console, data, tags, path.campaign_id)
        return redirect(request, f"/admin/campaigns/{path.campaign_id}?notice=已保存，检查通过。")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        errors = form_errors(errors, data)
        return await _detail(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, passes=(403, 404))


@routes.post(r"/admin/campaigns/{campaign_id:\d+}/{action:validate|pause|resume|cancel}")
@page()
async def act(request: web.Request, console: Console) -> web.StreamResponse:
    path, action = _path(request), request.match_info["action"]

    async def attempt() -> web.StreamResponse:
        await api(request, console, ACTIONS[action], path=path)
        return redirect(request, f"/admin/campaigns/{path.campaign_id}?notice={NOTICES[action]}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _detail(request, console, error=_first(errors), refusal=errors, status=400)

    return await submit(attempt, refused, passes=(403, 404))


@routes.post(r"/admin/campaigns/{campaign_id:\d+}/start")
@page(StaffRole.ADMIN)
async def start(request: web.Request, console: Console) -> web.StreamResponse:
    """Start a checked draft now, or schedule it for the time given (merchant time)."""
    path, data = _path(request), await form(request)

    async def attempt() -> web.StreamResponse:
        at = local_moment(data.get("at", ""), console.merchant.timezone)
        body = parse(admin_campaigns.ScheduleIn, {"at": at})
        await api(request, console, admin_campaigns.schedule_campaign, body=body, path=path)
        notice = "?notice=已安排发送。" if at is not None else ""
        return redirect(request, f"/admin/campaigns/{path.campaign_id}{notice}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        kept = {"at": data.get("at", "")}
        return await _detail(request, console, errors={"at": _first(errors)}, kept=kept, status=400)

    return await submit(attempt, refused, passes=(403, 404))


@routes.post(r"/admin/campaigns/{campaign_id:\d+}/test-send")
@page(StaffRole.ADMIN)
async def test_send(request: web.Request, console: Console) -> web.StreamResponse:
    """Send the sample member's message to one staff recipient (an openid or a phone)."""
    path, data = _path(request), await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(admin_campaigns.TestSendIn, {"to": data.get("to", "").strip()})
        await api(request, console, admin_campaigns.test_send_campaign, body=body, path=path)
        return await _detail(request, console, notice="测试消息已发送。")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        errors = form_errors({"to": _first(errors)}, {})
        return await _detail(request, console, errors=errors, kept={"to": data.get("to", "")}, status=400)

    return await submit(attempt, refused, passes=(403, 404))
