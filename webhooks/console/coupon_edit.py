"""Console page of one coupon template: edit its fields (the API's replace, `PUT .../templates/{id}`),
and delete it while it has never issued a coupon (`DELETE`); stopping and resuming issuing stay on the
list. Once coupons are issued the API freezes the terms (what a coupon takes off) and refuses a stock
below what was issued: the refusal is shown next to the field, the input kept.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from models.staff import StaffRole
from webhooks import coupons
from webhooks.console.base import EditPage, api, fen_to_yuan, form, page, parse, redirect, submit
from webhooks.console.programme import KINDS, template_body
from webhooks.console.security import Console

routes = web.RouteTableDef()


def _yuan(fen: int | None) -> str:
    return "" if fen is None else fen_to_yuan(fen).replace(",", "")


def template_values(t: coupons.TemplateOut, zone: str) -> dict[str, str]:
    """A template as its form shows it: yuan for fen, merchant-local dates (the end day included)."""
    local = ZoneInfo(zone)
    until = (t.valid_until.astimezone(local) - timedelta(days=1)).date() if t.valid_until else None
    numbers = {"percent_off": t.percent_off or None, "valid_days": t.valid_days}
    numbers |= {"total_stock": t.total_stock, "limit_per_member": t.limit_per_member}
    return {
        "name": t.name,
        "kind": t.kind.value,
        "threshold_fen": _yuan(t.threshold_fen or None),
        "amount_off_fen": _yuan(t.amount_off_fen or None),
        "cap_fen": _yuan(t.cap_fen),
        "gift_name": t.gift_name,
        "valid_from": t.valid_from.astimezone(local).date().isoformat() if t.valid_from else "",
        "valid_until": until.isoformat() if until else "",
        "store_codes": ", ".join(t.store_codes or []),
        "active": "true" if t.active else "",
        **{name: "" if value is None else str(value) for name, value in numbers.items()},
    }


def _path(request: web.Request) -> coupons.TemplatePath:
    return parse(coupons.TemplatePath, {"template_id": request.match_info["template_id"]})


TEMPLATE_PAGE: EditPage[coupons.TemplateOut] = EditPage(
    "coupon_edit.html",
    "coupons",
    "t",
    load=lambda request, console: api(request, console, coupons.get_template, path=_path(request)),
    values_of=lambda template, console: template_values(template, console.merchant.timezone),
    extra={"kinds": KINDS},
)


@routes.get(r"/admin/coupons/templates/{template_id:\d+}")
@page(StaffRole.ADMIN)
async def edit_template(request: web.Request, console: Console) -> web.StreamResponse:
    """The template's form, filled with its current fields."""
    return await TEMPLATE_PAGE.show(request, console)


@routes.post(r"/admin/coupons/templates/{template_id:\d+}")
@page(StaffRole.ADMIN)
async def save_template(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(coupons.TemplateIn, template_body(data, console.merchant.timezone))
        saved = await api(request, console, coupons.replace_template, body=body, path=_path(request))
        return redirect(request, f"/admin/coupons?saved={saved.id}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await TEMPLATE_PAGE.show(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix="template", passes=(403, 404))


@routes.post(r"/admin/coupons/templates/{template_id:\d+}/delete")
@page(StaffRole.ADMIN)
async def delete_template(request: web.Request, console: Console) -> web.StreamResponse:
    """Delete a template that never issued a coupon (one that did can only be stopped)."""

    async def attempt() -> web.StreamResponse:
        await api(request, console, coupons.delete_template, path=_path(request))
        return redirect(request, "/admin/coupons?deleted=1")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        shown: dict[str, Any] = {"delete": next(iter(errors.values()))}
        return await TEMPLATE_PAGE.show(request, console, errors=shown, status=400)

    return await submit(attempt, refused, passes=(403, 404))
