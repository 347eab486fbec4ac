"""Console pages of the programme: coupon templates (create) and issuing a coupon to a member, the
earn rules with the what-if simulation shown beside the form before they are saved, the tier ladder.

Like every console page, each calls the JSON admin endpoint's handler with that endpoint's request
model (`webhooks.console.base.api`). Amounts are typed in yuan and sent as fen.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from handlers.core.errors import DomainError
from models.staff import StaffRole
from webhooks import admin_loyalty, coupons
from webhooks.console import programme_form as ladder
from webhooks.console.base import (
    FormErrors,
    Refusal,
    api,
    error_page,
    form,
    page,
    parse,
    present,
    redirect,
    render,
    submit,
    whole_number,
    yuan_to_fen,
)
from webhooks.console.security import Console

routes = web.RouteTableDef()
KINDS = {"fixed": "满减券", "percent": "折扣券", "gift": "礼品券"}
# Coupons -----------------------------------------------------------------------------------------


def _day_start(raw: str, zone: str, *, after: bool = False) -> Any:
    """A merchant-local date as the instant its day starts (`after`: the next day's, an exclusive end)."""
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        return raw
    moment = datetime.combine(day, time.min, tzinfo=ZoneInfo(zone))
    return (moment + timedelta(days=1)).isoformat() if after else moment.isoformat()


def template_body(data: dict[str, str], zone: str) -> dict[str, Any]:
    values = present(data, *data.keys())
    body: dict[str, Any] = {
        "name": values.get("name", ""),
        "kind": values.get("kind", ""),
        "active": data.get("active") == "true",
    }
    for name in ("threshold_fen", "amount_off_fen", "cap_fen"):
        if name in values:
            body[name] = yuan_to_fen(values[name])
    for name in ("percent_off", "valid_days", "total_stock", "limit_per_member"):
        if name in values:
            body[name] = whole_number(values[name])
    if "gift_name" in values:
        body["gift_name"] = values["gift_name"]
    if "valid_from" in values:
        body["valid_from"] = _day_start(values["valid_from"], zone)
    if "valid_until" in values:
        body["valid_until"] = _day_start(values["valid_until"], zone, after=True)
    if "store_codes" in values:  # "A01, A02": only these stores; empty: every store
        body["store_codes"] = [code for code in re.split(r"[\s,，、]+", values["store_codes"]) if code]
    return body


async def _coupons_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
    issued: Any = None,
) -> web.Response:
    templates = await api(request, console, coupons.list_templates)
    context = {
        "templates": templates.items,
        "errors": errors or {},
        "values": values or {},
        "kinds": KINDS,
        "issue_key": secrets.token_hex(12),
        "issued": issued,
        "created": request.query.get("created"),
        "saved": request.query.get("saved"),
        "deleted": request.query.get("deleted"),
    }
    return render(request, "coupons.html", console, context, status=status, section="coupons")


def _coupons_again(request: web.Request, console: Console, values: dict[str, str]) -> Refusal:
    """The coupons page again after a refused form: the errors next to their fields, `values` kept."""

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _coupons_page(request, console, errors=errors, values=values, status=400)

    return refused


@routes.get("/admin/coupons")
@page()
async def coupon_templates(request: web.Request, console: Console) -> web.StreamResponse:
    """The coupon templates, a form to create one (admin) and one to issue a coupon to a member."""
    return await _coupons_page(request, console)


@routes.post("/admin/coupons/templates")
@page(StaffRole.ADMIN)
async def create_template(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(coupons.TemplateIn, template_body(data, console.merchant.timezone))
        created = await api(request, console, coupons.create_template, body=body)
        return redirect(request, f"/admin/coupons?created={created.id}")

    return await submit(attempt, _coupons_again(request, console, data), prefix="template")


@routes.post("/admin/coupons/issue")
@page()
async def issue_coupon(request: web.Request, console: Console) -> web.StreamResponse:
    """Give one member a coupon by hand, with a reason (stock and the per-member limit apply)."""
    data = await form(request)
    raw = {
        "member_code": data.get("member_code", "").strip(),
        "template_id": whole_number(data.get("template_id", "")),
        "reason": data.get("reason", "").strip(),
        "idempotency_key": data.get("key", ""),
    }

    async def attempt() -> web.StreamResponse:
        body = parse(coupons.IssueIn, raw)
        issued = await api(request, console, coupons.issue, body=body)
        return await _coupons_page(request, console, issued=issued)

    return await submit(attempt, _coupons_again(request, console, data), prefix="issue")


# Earn rules --------------------------------------------------------------------------------------

SIMPLE = ("points_per_yuan", "per_purchase_cap", "daily_cap")


def proposed_rules(data: dict[str, str]) -> dict[str, Any]:
    """The rule set a form proposes: the full document (advanced JSON) with the simple fields on top."""
    try:
        document = json.loads(data.get("document", "") or "{}")
    except json.JSONDecodeError as exc:
        raise FormErrors({"document": f"规则 JSON 格式不正确（第 {exc.lineno} 行）"}) from None
    if not isinstance(document, dict):
        raise FormErrors({"document": "规则 JSON 须为一个对象"})
    points = data.get("points_per_yuan", "").strip()
    if points:
        document["points_per_yuan"] = points
    for name in ("per_purchase_cap", "daily_cap"):
        raw = data.get(name, "").strip()
        document[name] = whole_number(raw) if raw else None
    if data.get("band_mode") in ("per_purchase", "cumulative"):
        document["band_mode"] = data["band_mode"]
    return document


def rule_errors(errors: dict[str, str]) -> dict[str, str]:
    """The API names a rule's field by its path in the body (`rules.points_per_yuan`, `rules.bands[0]…`):
    a simple field's error goes next to it, any other next to the JSON document."""
    shown: dict[str, str] = {}
    for name, message in errors.items():
        inner = name.removeprefix("rules.").removeprefix("rules")
        key = inner if inner in (*SIMPLE, "days", "band_mode", "simulated") else "document"
        shown.setdefault(key, message)
    return shown


def digest(document: dict[str, Any]) -> str:
    """What a simulation was run on, so that saving can insist it is what is saved."""
    canonical = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _form_values(rules: dict[str, Any]) -> dict[str, str]:
    shown = {k: v for k, v in rules.items() if k not in ("version",)}
    return {
        "points_per_yuan": str(rules.get("points_per_yuan", "")),
        "per_purchase_cap": "" if rules.get("per_purchase_cap") is None else str(rules["per_purchase_cap"]),
        "daily_cap": "" if rules.get("daily_cap") is None else str(rules["daily_cap"]),
        "band_mode": str(rules.get("band_mode", "per_purchase")),
        "document": json.dumps(shown, ensure_ascii=False, indent=2),
        "days": "30",
    }


async def _rules_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    current = await api(request, console, admin_loyalty.get_rules)
    context = {
        "current": current,
        "values": values or _form_values(current.rules),
        "errors": errors or {},
        "saved": request.query.get("saved"),
    }
    return render(request, "rules.html", console, context, status=status, section="programme")


@routes.get("/admin/programme/rules")
@page(StaffRole.ADMIN)
async def rules(request: web.Request, console: Console) -> web.StreamResponse:
    """The earn rules: edit, simulate against recent purchases, then save the simulated version."""
    return await _rules_page(request, console)


@routes.post("/admin/programme/rules/simulate")
@page(StaffRole.ADMIN)
async def simulate(request: web.Request, console: Console) -> web.StreamResponse:
    """The simulation of the form's rules (an htmx fragment beside the form), with the save button."""
    data = await form(request)
    days = whole_number(data.get("days", "30"))

    async def attempt() -> web.StreamResponse:
        document = proposed_rules(data)
        body = parse(admin_loyalty.SimulateIn, {"rules": document, "days": days})
        result = await api(request, console, admin_loyalty.simulate_rules, body=body)
        context = {"errors": {}, "result": result, "digest": digest(document), "days": days}
        return render(request, "rules_simulation.html", console, context)

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        context = {"errors": rule_errors(errors), "result": None}
        return render(request, "rules_simulation.html", console, context, status=400)

    return await submit(attempt, refused)


@routes.post("/admin/programme/rules")
@page(StaffRole.ADMIN)
async def save_rules(request: web.Request, console: Console) -> web.StreamResponse:
    """Save the rules as the next version, only as simulated: a form changed since its simulation is
    refused (simulate again)."""
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        document = proposed_rules(data)
        if data.get("simulated", "") != digest(document):
            raise FormErrors({"simulated": "规则在模拟之后有改动，请重新模拟并查看结果后再保存"})
        body = parse(admin_loyalty.RulesIn, {"rules": document})
        saved = await api(request, console, admin_loyalty.put_rules, body=body)
        return redirect(request, f"/admin/programme/rules?saved={saved.version}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _rules_page(request, console, errors=rule_errors(errors), values=data, status=400)

    return await submit(attempt, refused)


# Tier ladder -------------------------------------------------------------------------------------


async def _tiers_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: ladder.Values | None = None,
    document: str | None = None,
    status: int = 200,
) -> web.Response:
    current = await api(request, console, admin_loyalty.get_tiers)
    shown = values if values is not None else ladder.tier_values(current.tiers)
    context = {
        "current": current,
        "values": shown,
        "rows": range(min(int(shown["rows"]), ladder.MAX_TIERS * 2)),
        "templates": (await api(request, console, coupons.list_templates)).items,
        "document": document
        if document is not None
        else json.dumps(current.tiers, ensure_ascii=False, indent=2),
        "errors": errors or {},
        "saved": request.query.get("saved"),
    }
    return render(request, "programme.html", console, context, status=status, section="programme")


@routes.get("/admin/programme")
@page(StaffRole.ADMIN)
async def programme(request: web.Request, console: Console) -> web.StreamResponse:
    """The tier ladder (each tier's criteria and benefits, edited field by field, one row a tier) and
    the links to the rest of the programme."""
    return await _tiers_page(request, console)


@routes.get("/admin/programme/tiers/row")
@page(StaffRole.ADMIN)
async def tier_row(request: web.Request, console: Console) -> web.StreamResponse:
    """One more blank tier row (htmx), and the add button moved on to the next row number."""
    index = whole_number(request.query.get("index", ""))
    if not isinstance(index, int) or not 0 <= index < ladder.MAX_TIERS * 2:
        return error_page(request, console, 400, "等级行数已达上限")
    context = {
        "index": index,
        "values": {},
        "errors": {},
        "templates": (await api(request, console, coupons.list_templates)).items,
    }
    return render(request, "tier_row_fragment.html", console, context)


@routes.post("/admin/programme/tiers/form")
@page(StaffRole.ADMIN)
async def save_tier_form(request: web.Request, console: Console) -> web.StreamResponse:
    """The ladder as typed in its rows: saved as the next version, or the rows again with each error
    next to its field."""
    data = await request.post()
    tiers, rows = ladder.proposed_tiers(data)

    async def attempt() -> web.StreamResponse:
        body = parse(admin_loyalty.TiersIn, {"tiers": tiers})
        saved = await api(request, console, admin_loyalty.put_tiers, body=body)
        return redirect(request, f"/admin/programme?saved={saved.version}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        values = ladder.typed_tier_values(data)
        shown = ladder.tier_errors(errors, rows)
        return await _tiers_page(request, console, errors=shown, values=values, status=400)

    return await submit(attempt, refused)


@routes.post("/admin/programme/tiers")
@page(StaffRole.ADMIN)
async def save_tiers(request: web.Request, console: Console) -> web.StreamResponse:
    """The ladder as one JSON document (the advanced editor)."""
    data = await form(request)
    text = data.get("document", "")

    async def attempt() -> web.StreamResponse:
        try:
            tiers = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormErrors({"document": f"等级 JSON 格式不正确（第 {exc.lineno} 行）"}) from None
        body = parse(admin_loyalty.TiersIn, {"tiers": tiers})
        saved = await api(request, console, admin_loyalty.put_tiers, body=body)
        return redirect(request, f"/admin/programme?saved={saved.version}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        message = next(iter(errors.values()))
        return await _tiers_page(request, console, errors={"document": message}, document=text, status=400)

    return await submit(attempt, refused)


@routes.post(r"/admin/coupons/templates/{template_id:\d+}/active")
@page(StaffRole.ADMIN)
async def template_active(request: web.Request, console: Console) -> web.StreamResponse:
    """Stop (or resume) issuing a template: the API's replace with its current terms and `active` changed."""
    data = await form(request)
    path = parse(coupons.TemplatePath, {"template_id": request.match_info["template_id"]})
    current = await api(request, console, coupons.get_template, path=path)
    fields = {name: getattr(current, name) for name in coupons.TemplateIn.model_fields}
    body = parse(coupons.TemplateIn, {**fields, "active": data.get("active") == "true"})
    try:
        await api(request, console, coupons.replace_template, body=body, path=path)
    except DomainError as exc:
        return await _coupons_page(request, console, errors={"template.form": exc.message}, status=400)
    return redirect(request, "/admin/coupons")
