"""Console page of triggered journeys: the list with each journey's counts (sent, skipped, holdout…),
a form to create one (its trigger, and the message with the campaign form's channel fields), an
admin's switch on / off and delete (of a journey that is off), and each journey's edit page (the same
fields, filled with its values). Every step is the journeys API's handler; a refused form is shown
again with the error next to the field and the input kept."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from handlers.core.errors import ErrorCode
from models.staff import StaffRole
from webhooks import admin_campaigns
from webhooks.api import ApiError
from webhooks.console.base import (
    EditPage,
    api,
    form,
    page,
    parse,
    present,
    redirect,
    render,
    submit,
    whole_number,
)
from webhooks.console.campaigns.form import DEFAULTS, STATES, campaign_body, form_errors, form_values
from webhooks.console.campaigns.pages import choices, tags_of
from webhooks.console.security import Console

routes = web.RouteTableDef()
TRIGGERS = {
    "enters_segment": "会员进入人群时",
    "days_after_registration": "注册 N 天后",
    "days_after_first_purchase": "首次消费 N 天后",
}


def journey_body(data: dict[str, str], tags: dict[int, int | None]) -> dict[str, Any]:
    """The journeys API's JourneyIn: the trigger, and the message as the campaign form builds it (named
    after the journey)."""
    values = present(data, "name", "trigger", "days", "segment_id")
    message = campaign_body({**data, "name": values.get("name", "")}, tags)
    return {
        "name": values.get("name", ""),
        "trigger": values.get("trigger", ""),
        "days": whole_number(values.get("days", "0")),
        "segment_id": whole_number(values["segment_id"]) if "segment_id" in values else None,
        "message": message,
    }


async def _page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    notice: str = "",
    status: int = 200,
) -> web.Response:
    context = await choices(request, console)
    context.update(
        journeys=(await api(request, console, admin_campaigns.list_journeys)).items,
        triggers=TRIGGERS,
        states=STATES,
        errors=errors or {},
        values=values or {"channel": "custom", "trigger": "days_after_registration", "days": "0", **DEFAULTS},
        notice=notice or request.query.get("notice", ""),
        action="/admin/journeys",
    )
    return render(request, "journeys.html", console, context, status=status, section="campaigns")


@routes.get("/admin/journeys")
@page()
async def journeys_page(request: web.Request, console: Console) -> web.StreamResponse:
    return await _page(request, console)


@routes.post("/admin/journeys")
@page()
async def create(request: web.Request, console: Console) -> web.StreamResponse:
    """A journey, switched off (an admin switches it on)."""
    data = await form(request)
    tags = tags_of(await choices(request, console))

    async def attempt() -> web.StreamResponse:
        body = parse(admin_campaigns.JourneyIn, journey_body(data, tags))
        await api(request, console, admin_campaigns.create_journey, body=body)
        return redirect(request, "/admin/journeys?notice=旅程已创建（未启用）。")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        errors = form_errors(errors, data, prefix="message.")
        return await _page(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused)


def _path(request: web.Request) -> admin_campaigns.JourneyPath:
    raw = request.match_info["journey_id"]
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        raise ApiError(404, ErrorCode.NOT_FOUND, "旅程不存在")
    return admin_campaigns.JourneyPath(journey_id=int(raw))


ACTIONS = {
    "activate": (admin_campaigns.activate_journey, "旅程已启用，从现在起满足条件的会员会收到消息。"),
    "deactivate": (admin_campaigns.deactivate_journey, "旅程已停用。"),
    "delete": (admin_campaigns.delete_journey, "旅程已删除，已发送的记录仍计入营销频次。"),
}


@routes.post(r"/admin/journeys/{journey_id:\d+}/{action:activate|deactivate|delete}")
@page(StaffRole.ADMIN)
async def switch(request: web.Request, console: Console) -> web.StreamResponse:
    """Switch a journey on (its message is checked for a sample member first) or off, or delete one
    that is off."""
    path = _path(request)
    handler, notice = ACTIONS[request.match_info["action"]]

    async def attempt() -> web.StreamResponse:
        await api(request, console, handler, path=path)
        return redirect(request, f"/admin/journeys?notice={notice}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        message = next(iter(errors.values()), "")
        return await _page(request, console, errors={f"journey-{path.journey_id}": message}, status=400)

    return await submit(attempt, refused, passes=(403, 404))


# One journey: edit it ----------------------------------------------------------------------------


def journey_values(journey: admin_campaigns.JourneyOut) -> dict[str, str]:
    """A journey as its form shows it: the trigger, and the message as the campaign form does."""
    return {
        **form_values(journey.campaign),
        "name": journey.name,
        "trigger": journey.trigger,
        "days": str(journey.days),
        "segment_id": "" if journey.segment_id is None else str(journey.segment_id),
    }


JOURNEY_PAGE: EditPage[admin_campaigns.JourneyOut] = EditPage(
    "journey_edit.html",
    "campaigns",
    "j",
    load=lambda request, console: api(request, console, admin_campaigns.get_journey, path=_path(request)),
    values_of=lambda journey, _: journey_values(journey),
    extra={"triggers": TRIGGERS},
)


async def _edit_page(request: web.Request, console: Console, notice: str = "") -> EditPage[Any]:
    """The edit page with what its form offers (segments, coupon templates, channels)."""
    extra = {**JOURNEY_PAGE.extra, **await choices(request, console), "notice": notice}
    return replace(JOURNEY_PAGE, extra=extra)


@routes.get(r"/admin/journeys/{journey_id:\d+}")
@page()
async def journey_page(request: web.Request, console: Console) -> web.StreamResponse:
    """The journey's form, filled with its trigger and message (managers save one that is off, admins
    any)."""
    notice = "旅程已保存。" if request.query.get("saved") else ""
    return await (await _edit_page(request, console, notice)).show(request, console)


@routes.post(r"/admin/journeys/{journey_id:\d+}")
@page()
async def save_journey(request: web.Request, console: Console) -> web.StreamResponse:
    """Replace the journey's trigger and message through the API (members already sent stay sent; a
    manager's edit of a journey that is on is refused there)."""
    data = await form(request)
    path = _path(request)
    edit_page = await _edit_page(request, console)

    async def attempt() -> web.StreamResponse:
        body = parse(admin_campaigns.JourneyIn, journey_body(data, tags_of(dict(edit_page.extra))))
        await api(request, console, admin_campaigns.edit_journey, body=body, path=path)
        return redirect(request, f"/admin/journeys/{path.journey_id}?saved=1")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        shown = form_errors(errors, data, prefix="message.")
        if "active" in shown:  # a manager's edit of a journey that is on: no field of the form holds it
            shown["form"] = shown.pop("active")
        return await edit_page.show(request, console, errors=shown, values=data, status=400)

    return await submit(attempt, refused, passes=(403, 404))
