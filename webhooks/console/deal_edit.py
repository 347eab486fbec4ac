"""Console pages of one flash sale (秒杀) or group deal (拼团): its form filled with the current terms
(admins change them: everything before the start, the end — and a sale's stock, upwards — once it
runs) and "立即结束" behind a confirmation. Only the fields whose input differs from the current value
are sent to the API's PATCH, so a running sale's fixed terms, shown to the minute, are never "changed"
by saving; the API's use cases decide what may change and audit-log it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from models.staff import StaffRole
from webhooks import mall_deals
from webhooks.console.base import EditPage, api, form, page, parse, redirect, submit, whole_number
from webhooks.console.mall import local_input, local_moment, mall_page
from webhooks.console.security import Console

routes = web.RouteTableDef()
STATES = {"upcoming": "未开始", "live": "进行中", "ended": "已结束"}


@dataclass(frozen=True, slots=True)
class Kind:
    """What differs between the two: the URL part, the path model, the numbers, the API's handlers."""

    slug: str
    id_name: str
    path_model: Any
    body_model: Any
    numbers: tuple[str, ...]
    get: Callable[..., Awaitable[Any]]
    edit: Callable[..., Awaitable[Any]]
    end: Callable[..., Awaitable[Any]]
    title: str


SALE = Kind(
    "flash-sales",
    "sale_id",
    mall_deals.SaleIdPath,
    mall_deals.FlashSaleEditIn,
    ("price_points", "stock", "limit_per_member"),
    mall_deals.get_flash_sale,
    mall_deals.edit_flash_sale,
    mall_deals.end_flash_sale,
    "秒杀",
)
DEAL = Kind(
    "group-deals",
    "deal_id",
    mall_deals.DealIdPath,
    mall_deals.GroupDealEditIn,
    ("price_points", "group_size", "hours"),
    mall_deals.get_group_deal,
    mall_deals.edit_group_deal,
    mall_deals.end_group_deal,
    "拼团",
)


def deal_values(kind: Kind, current: Any, zone: str) -> dict[str, str]:
    """A sale or deal as its form shows it (times to the minute, in the merchant's time zone)."""
    values = {name: str(getattr(current, name)) for name in kind.numbers}
    values.update(starts_at=local_input(current.starts_at, zone), ends_at=local_input(current.ends_at, zone))
    return values


def changed_body(kind: Kind, data: dict[str, str], shown: dict[str, str], zone: str) -> dict[str, Any]:
    """The PATCH body: each input that differs from what the form showed for the current terms."""
    body: dict[str, Any] = {}
    for name, before in shown.items():
        typed = data.get(name, "").strip()
        if typed == before:
            continue
        if name in kind.numbers:
            body[name] = whole_number(typed)
        else:
            body[name] = local_moment(typed, zone) if typed else typed
    return body


def _path(kind: Kind, request: web.Request) -> Any:
    return parse(kind.path_model, {kind.id_name: request.match_info["id"]})


def _edit_page(kind: Kind) -> EditPage[Any]:
    async def load(request: web.Request, console: Console) -> Any:
        return await api(request, console, kind.get, path=_path(kind, request))

    return EditPage(
        "deal_edit.html",
        "programme",
        "deal",
        load=load,
        values_of=lambda current, console: deal_values(kind, current, console.merchant.timezone),
        extra={"kind": kind, "states": STATES},
    )


PAGES = {kind.slug: (kind, _edit_page(kind)) for kind in (SALE, DEAL)}
ID = r"{id:\d+}"
KINDS = "{kind:flash-sales|group-deals}"


def _kind(request: web.Request) -> tuple[Kind, EditPage[Any]]:
    return PAGES[request.match_info["kind"]]


@routes.get(f"/admin/mall/{KINDS}/{ID}")
@page()
async def deal_page(request: web.Request, console: Console) -> web.StreamResponse:
    """A sale's or deal's terms, as a form for admins, with "立即结束" while it is not over."""
    edit_page = _kind(request)[1]
    done = {"saved": "已保存。", "ended": "已立即结束。"}.get(request.query.get("done", ""), "")
    return await replace(edit_page, extra={**edit_page.extra, "notice": done}).show(request, console)


@routes.post(f"/admin/mall/{KINDS}/{ID}")
@page(StaffRole.ADMIN)
async def save_deal(request: web.Request, console: Console) -> web.StreamResponse:
    """Change the terms that were edited (the API refuses what may not change now, by field)."""
    kind, edit_page = _kind(request)
    data = await form(request)
    path = _path(kind, request)

    async def attempt() -> web.StreamResponse:
        current = await api(request, console, kind.get, path=path)
        shown = deal_values(kind, current, console.merchant.timezone)
        body = parse(kind.body_model, changed_body(kind, data, shown, console.merchant.timezone))
        await api(request, console, kind.edit, body=body, path=path)
        return redirect(request, f"/admin/mall/{kind.slug}/{current.id}?done=saved")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await edit_page.show(request, console, errors=_by_field(kind, errors), values=data, status=400)

    return await submit(attempt, refused, passes=(403, 404))


@routes.post(f"/admin/mall/{KINDS}/{ID}/end")
@page(StaffRole.ADMIN)
async def end_deal(request: web.Request, console: Console) -> web.StreamResponse:
    """End it now (after the page's confirmation): a sale refuses every attempt from then on; a deal's
    open groups fail and are refunded."""
    kind, edit_page = _kind(request)
    path = _path(kind, request)
    from_list = (await form(request)).get("back") == "list"  # the mall page's list, else this page

    async def attempt() -> web.StreamResponse:
        await api(request, console, kind.end, path=path)
        if from_list:
            return redirect(request, "/admin/mall?done=ended")
        return redirect(request, f"/admin/mall/{kind.slug}/{getattr(path, kind.id_name)}?done=ended")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        message = next(iter(errors.values()))
        if from_list:
            key = f"end-{kind.slug}-{getattr(path, kind.id_name)}"
            return await mall_page(request, console, errors={key: message}, status=400)
        return await edit_page.show(request, console, errors={"end": message}, status=400)

    return await submit(attempt, refused, passes=(403, 404))


def _by_field(kind: Kind, errors: dict[str, str]) -> dict[str, str]:
    """The API's fields are the form's; the sale or deal as a whole is the form's own error."""
    fields = {*kind.numbers, "starts_at", "ends_at"}
    return {(key if key in fields else "form"): message for key, message in errors.items()}
