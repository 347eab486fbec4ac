"""Console pages of the programme's settings: check-in rewards, stored-value bonus tiers and the other
programme settings (sections of the programme document), the notice texts with a live preview, and the
Official Account's chat menu.

Every section has a field-by-field form (the other settings' in `programme_form`) and a JSON editor.
Saving goes through the admin API's handlers (`put_program`, `save_setting`, `push_menu`) with their
request models; the live preview checks and renders a text with the notice use case's own functions
(`handlers.notices.settings`), against the notice's sample data, and saves nothing.
"""

from __future__ import annotations

import json
from typing import Any

import jinja2
from aiohttp import web

from handlers.core.errors import DomainError
from handlers.core.templating import Renderer
from handlers.notices import settings as notice_settings
from models.staff import StaffRole
from webhooks import admin, admin_loyalty, admin_menu, coupons, notices
from webhooks.appkeys import RENDERER
from webhooks.console import programme_form as fields
from webhooks.console.base import (
    FormErrors,
    Refusal,
    api,
    form,
    page,
    parse,
    redirect,
    render,
    submit,
    whole_number,
    yuan_to_fen,
)
from webhooks.console.security import Console

routes = web.RouteTableDef()
SECTIONS = {
    "checkin": "签到奖励",
    "stored_value": "储值赠送档位",
    "other": "其他方案设置（积分有效期、注册礼、抵现、推荐奖励）",
}
OTHER_KEYS = (
    "expiry",
    "pending_days",
    "points_per_yuan_cash",
    "registration_bonus",
    "profile_bonus",
    "offset",
    "referral",
    "earn_pool",
    "new_member_coupon_template_ids",
)


def _section(program: dict[str, Any], name: str) -> Any:
    if name == "other":
        return {key: program.get(key) for key in OTHER_KEYS}
    return program.get(name)


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


async def _settings_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    texts: dict[str, str] | None = None,
    other: fields.Values | None = None,
    status: int = 200,
) -> web.Response:
    program = (await api(request, console, admin_loyalty.get_program)).program
    documents = {name: _text(_section(program, name)) for name in SECTIONS}
    typed = texts or {}
    documents.update({k: v for k, v in typed.items() if k in SECTIONS})
    context = {
        "program": program,
        "typed": typed,
        "tier_rows": range(TIER_ROWS),
        "streak_rows": range(STREAK_ROWS),
        "streaks": sorted((int(day), points) for day, points in program["checkin"]["streak_rewards"].items()),
        "sections": SECTIONS,
        "other": other if other is not None else fields.other_values(program),
        "referral_rows": range(fields.REFERRAL_LEVELS),
        "templates": (await api(request, console, coupons.list_templates)).items,
        "documents": documents,
        "errors": errors or {},
        "saved": SECTIONS.get(request.query.get("saved", "")),
    }
    return render(request, "settings.html", console, context, status=status, section="programme")


@routes.get("/admin/programme/settings")
@page(StaffRole.ADMIN)
async def programme_settings(request: web.Request, console: Console) -> web.StreamResponse:
    """Check-in rewards, stored-value bonus tiers (充100送20) and the rest of the programme."""
    return await _settings_page(request, console)


async def _save(
    request: web.Request, console: Console, name: str, value: Any, refused: Refusal
) -> web.StreamResponse:
    """Put `value` in the programme document as section `name` (or, for `other`, its keys) and save the
    whole document through the API; a refusal is answered by `refused`."""

    async def attempt() -> web.StreamResponse:
        program = dict((await api(request, console, admin_loyalty.get_program)).program)
        if name == "other":
            if not isinstance(value, dict):
                raise FormErrors({name: "须为一个 JSON 对象"})
            program.update(value)
        else:
            program[name] = value
        body = parse(admin_loyalty.ProgramIn, {"program": program})
        await api(request, console, admin_loyalty.put_program, body=body)
        return redirect(request, f"/admin/programme/settings?saved={name}")

    return await submit(attempt, refused)


def _again(request: web.Request, console: Console, name: str, shown: dict[str, str]) -> Refusal:
    """The section again with what was typed (`shown`) and the refusal under the section."""

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        message = next(iter(errors.values()))
        return await _settings_page(request, console, errors={name: message}, texts=shown, status=400)

    return refused


@routes.post(r"/admin/programme/settings/{section:checkin|stored_value|other}")
@page(StaffRole.ADMIN)
async def save_section(request: web.Request, console: Console) -> web.StreamResponse:
    """A section as JSON (the advanced editor)."""
    name = request.match_info["section"]
    data = await form(request)
    text = data.get("document", "")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        error = {name: f"JSON 格式不正确（第 {exc.lineno} 行）"}
        return await _settings_page(request, console, errors=error, texts={name: text}, status=400)
    return await _save(request, console, name, value, _again(request, console, name, {name: text}))


TIER_ROWS = 6
STREAK_ROWS = 5


@routes.post("/admin/programme/settings/stored_value/tiers")
@page(StaffRole.ADMIN)
async def save_bonus_tiers(request: web.Request, console: Console) -> web.StreamResponse:
    """Stored-value bonus tiers as rows of 充 X 元 送 Y 元 (empty rows are left out)."""
    data = await form(request)
    tiers = [
        {
            "min_fen": yuan_to_fen(data[f"min_{i}"]),
            "bonus_fen": yuan_to_fen(data.get(f"bonus_{i}", "0") or "0"),
        }
        for i in range(TIER_ROWS)
        if data.get(f"min_{i}", "").strip()
    ]
    shown = {f"sv.{k}": v for k, v in data.items()}
    refused = _again(request, console, "stored_value", shown)
    return await _save(request, console, "stored_value", {"bonus_tiers": tiers}, refused)


@routes.post("/admin/programme/settings/checkin/form")
@page(StaffRole.ADMIN)
async def save_checkin(request: web.Request, console: Console) -> web.StreamResponse:
    """Check-in rewards: daily points, streak rewards (day → extra points), the cycle and make-ups."""
    data = await form(request)
    cycle = data.get("cycle_days", "").strip()
    value = {
        "daily_points": whole_number(data.get("daily_points", "")),
        "streak_rewards": {
            data[f"streak_day_{i}"].strip(): whole_number(data.get(f"streak_points_{i}", ""))
            for i in range(STREAK_ROWS)
            if data.get(f"streak_day_{i}", "").strip()
        },
        "cycle_days": whole_number(cycle) if cycle else None,
        "makeup_cost_points": whole_number(data.get("makeup_cost_points", "")),
        "makeup_max_days_back": whole_number(data.get("makeup_max_days_back", "")),
        "makeup_max_per_month": whole_number(data.get("makeup_max_per_month", "")),
    }
    shown = {f"ck.{k}": v for k, v in data.items()}
    return await _save(request, console, "checkin", value, _again(request, console, "checkin", shown))


@routes.post("/admin/programme/settings/other/form")
@page(StaffRole.ADMIN)
async def save_other(request: web.Request, console: Console) -> web.StreamResponse:
    """The other settings field by field: expiry, pending days, cash rate, bonuses, offset, referral
    levels (one row a level), earn pool and the new-member coupons; each refusal next to its field."""
    data = await request.post()

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        shown, typed = fields.other_errors(errors), fields.typed_other_values(data)
        return await _settings_page(request, console, errors=shown, other=typed, status=400)

    return await _save(request, console, "other", fields.proposed_other(data), refused)


# Notices -----------------------------------------------------------------------------------------


def preview(kind_code: str, body: str, fields_text: str) -> dict[str, Any]:
    """What the member would read: the text and the template message's keywords rendered against the
    notice's sample data, or the reason they cannot be saved."""
    kind = notice_settings.kind_of(kind_code)
    try:
        fields = json.loads(fields_text) if fields_text.strip() else kind.fields
    except json.JSONDecodeError as exc:
        return {"error": f"模板消息关键词 JSON 格式不正确（第 {exc.lineno} 行）", "field": "template_fields"}
    try:
        notice_settings.validate(kind, {"body": body, "template_fields": fields})
        return {
            "body": notice_settings.render_body(body, kind.sample),
            "fields": notice_settings.render_fields(fields, kind.sample),
        }
    except DomainError as exc:
        return {"error": exc.message, "field": exc.field or "body"}
    except jinja2.TemplateError as exc:  # validate checks first; kept for a text it let through
        return {"error": f"模板无法渲染（{type(exc).__name__}）", "field": "body"}


@routes.get("/admin/programme/notices")
@page(StaffRole.ADMIN)
async def notice_list(request: web.Request, console: Console) -> web.StreamResponse:
    """Every notice kind: on or off, its channels, its text; each text with a live preview."""
    found = await api(request, console, notices.list_settings)
    context = {"settings": found, "saved": request.query.get("saved"), "errors": {}, "values": {}}
    return render(request, "notices.html", console, context, section="programme")


@routes.post(r"/admin/programme/notices/{kind:[a-z_]{1,32}}/preview")
@page(StaffRole.ADMIN)
async def notice_preview(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    kind = request.match_info["kind"]
    shown = preview(kind, data.get("body", ""), data.get("template_fields", ""))
    return render(request, "notice_preview.html", console, {"shown": shown, "kind": kind})


@routes.post(r"/admin/programme/notices/{kind:[a-z_]{1,32}}")
@page(StaffRole.ADMIN)
async def notice_save(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    kind = request.match_info["kind"]
    raw: dict[str, Any] = {
        "enabled": data.get("enabled") == "true",
        "channels": [c for c in ("template", "subscribe", "custom") if data.get(f"channel_{c}") == "true"],
        "body": data.get("body", ""),
    }

    async def attempt() -> web.StreamResponse:
        fields_text = data.get("template_fields", "")
        if fields_text.strip():
            try:
                raw["template_fields"] = json.loads(fields_text)
            except json.JSONDecodeError as exc:
                raise FormErrors({"template_fields": f"JSON 格式不正确（第 {exc.lineno} 行）"}) from None
        path = parse(notices.KindPath, {"kind": kind})
        body = parse(notices.SettingIn, raw)
        await api(request, console, notices.save_setting, body=body, path=path)
        return redirect(request, f"/admin/programme/notices?saved={kind}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        found = await api(request, console, notices.list_settings)
        context = {"settings": found, "saved": None, "errors": {kind: errors}, "values": {kind: data}}
        return render(request, "notices.html", console, context, status=400, section="programme")

    return await submit(attempt, refused, passes=(403, 404))


# Chat menu ---------------------------------------------------------------------------------------


async def _menu_page(
    request: web.Request,
    console: Console,
    *,
    error: str | None = None,
    text: str | None = None,
    status: int = 200,
) -> web.Response:
    current = await api(request, console, admin_menu.show_menu)
    context = {
        "current": current,
        "document": text if text is not None else _text(current.menu or current.default_menu),
        "error": error,
        "pushed": request.query.get("pushed"),
    }
    return render(request, "menu.html", console, context, status=status, section="programme")


@routes.get("/admin/programme/menu")
@page()
async def chat_menu(request: web.Request, console: Console) -> web.StreamResponse:
    """The Official Account menu last pushed (or the default), and pushing a new one (admins)."""
    return await _menu_page(request, console)


@routes.post("/admin/programme/menu")
@page(StaffRole.ADMIN)
async def push_menu(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    text = data.get("document", "")

    async def attempt() -> web.StreamResponse:
        try:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FormErrors({"document": f"菜单 JSON 格式不正确（第 {exc.lineno} 行）"}) from None
            body = parse(admin_menu.MenuIn, value if isinstance(value, dict) else {"button": value})
        except FormErrors as exc:  # the menu is one text box: the failing field is named in the message
            field, message = next(iter(exc.errors.items()))
            raise FormErrors({"document": f"{field}：{message}"}) from None
        await api(request, console, admin_menu.push_menu, body=body)
        return redirect(request, "/admin/programme/menu?pushed=1")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        error = next(iter(errors.values()))
        return await _menu_page(request, console, error=error, text=text, status=400)

    return await submit(attempt, refused)


# Chat reply templates ----------------------------------------------------------------------------


def reply_preview(renderer: Renderer, name: str, source: str, merchant_name: str) -> dict[str, str]:
    """The reply the source gives with the sample data it is checked against, or why it is refused."""
    try:
        template = renderer.validate_override(name, source)
    except DomainError as exc:
        return {"error": exc.message}
    sample = renderer.samples.get(name, {})
    return {"text": template.render(**{**sample, "merchant_name": merchant_name}).strip()}


@routes.get("/admin/programme/replies")
@page(StaffRole.ADMIN)
async def replies(request: web.Request, console: Console) -> web.StreamResponse:
    """Every chat reply: the built-in text or the merchant's own, each with a live preview."""
    found = await api(request, console, admin.list_reply_templates)
    context = {"templates": found.templates, "errors": {}, "values": {}, "saved": request.query.get("saved")}
    return render(request, "replies.html", console, context, section="programme")


@routes.post(r"/admin/programme/replies/{name:[A-Za-z0-9_-]{1,64}}/preview")
@page(StaffRole.ADMIN)
async def reply_preview_fragment(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    name = request.match_info["name"]
    shown = reply_preview(request.app[RENDERER], name, data.get("source", ""), console.merchant.name)
    return render(request, "reply_preview.html", console, {"shown": shown})


@routes.post(r"/admin/programme/replies/{name:[A-Za-z0-9_-]{1,64}}")
@page(StaffRole.ADMIN)
async def reply_save(request: web.Request, console: Console) -> web.StreamResponse:
    """Save the merchant's text for one reply, or (`reset`) go back to the built-in one."""
    data = await form(request)
    name = request.match_info["name"]

    async def attempt() -> web.StreamResponse:
        path = parse(admin.TemplatePath, {"name": name})
        if data.get("reset") == "true":
            await api(request, console, admin.delete_reply_template, path=path)
        else:
            body = parse(admin.TemplateSourceIn, {"source": data.get("source", "")})
            await api(request, console, admin.put_reply_template, body=body, path=path)
        return redirect(request, f"/admin/programme/replies?saved={name}#reply-{name}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        found = await api(request, console, admin.list_reply_templates)
        message = next(iter(errors.values()))
        context = {
            "templates": found.templates,
            "errors": {name: message},
            "values": {name: data.get("source", "")},
        }
        return render(request, "replies.html", console, context, status=400, section="programme")

    return await submit(attempt, refused, passes=(403, 404))
