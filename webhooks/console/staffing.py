"""Console pages of stores and staff, and the audit log.

Stores: list (a manager sees their own), open one, close and reopen (admins). Staff: list (a manager sees
their store's), create, change role or store (admins), deactivate and reactivate, reset a password,
unlock. Each action is the JSON admin endpoint's handler, with its request model and minimum role.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from handlers.core.errors import ErrorCode
from handlers.staff import accounts
from models.staff import StaffRole
from webhooks import admin_loyalty, admin_staff, admin_stores
from webhooks.api import ApiError, Call
from webhooks.console.base import api, form, page, parse, redirect, render, submit
from webhooks.console.security import Console

routes = web.RouteTableDef()
DONE = {
    "store": "门店已创建。",
    "close": "门店已关闭。",
    "reopen": "门店已重新开业。",
    "staff": "员工账号已创建。",
    "deactivate": "账号已停用，其登录已全部失效。",
    "reactivate": "账号已恢复。",
    "unlock": "账号已解锁。",
    "password": "密码已重置，其登录已全部失效。",
    "change": "角色或门店已修改。",
}


async def _page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    stores = await api(request, console, admin_stores.list_stores)
    staff = await api(request, console, admin_staff.list_staff)
    context = {
        "stores": stores.items,
        "store_names": {s.id: s.name for s in stores.items},
        "staff": staff.items,
        "next_url": f"/admin/stores?{urlencode({'cursor': staff.next_cursor})}"
        if staff.next_cursor
        else None,
        "errors": errors or {},
        "values": values or {},
        "done": DONE.get(request.query.get("done", "")),
        "roles": (("cashier", "收银员"), ("manager", "店长"), ("admin", "管理员")),
    }
    return render(request, "stores.html", console, context, status=status, section="org")


@routes.get("/admin/stores")
@page()
async def stores_and_staff(request: web.Request, console: Console) -> web.StreamResponse:
    return await _page(request, console)


async def _submit(
    request: web.Request,
    console: Console,
    prefix: str,
    done: str,
    run: Callable[[dict[str, str]], Awaitable[Any]],
) -> web.StreamResponse:
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        await run(data)
        return redirect(request, f"/admin/stores?done={done}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _page(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix=prefix)


@routes.post("/admin/stores")
@page(StaffRole.ADMIN)
async def open_store(request: web.Request, console: Console) -> web.StreamResponse:
    async def run(data: dict[str, str]) -> None:
        fields = {k: data.get(k, "").strip() for k in ("code", "name", "address")}
        body = parse(admin_stores.StoreCreateIn, fields)
        await api(request, console, admin_stores.create_store, body=body)

    return await _submit(request, console, "store", "store", run)


def _id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        raise ApiError(404, ErrorCode.NOT_FOUND, "请求的资源不存在")
    return int(raw)


Handler = Callable[[Call[Any, Any]], Awaitable[Any]]
STORE_ACTIONS: dict[str, Handler] = {"close": admin_stores.close_store, "reopen": admin_stores.reopen_store}
STAFF_ACTIONS: dict[str, Handler] = {
    "deactivate": admin_staff.deactivate_staff,
    "reactivate": admin_staff.reactivate_staff,
    "unlock": admin_staff.unlock_staff,
}


@routes.post(r"/admin/stores/{store_id:\d+}/{action:close|reopen}")
@page(StaffRole.ADMIN)
async def store_action(request: web.Request, console: Console) -> web.StreamResponse:
    store_id, action = _id(request, "store_id"), request.match_info["action"]

    async def run(data: dict[str, str]) -> None:
        path = parse(admin_stores.StorePath, {"store_id": store_id})
        await api(request, console, STORE_ACTIONS[action], path=path)

    return await _submit(request, console, f"store{store_id}", action, run)


@routes.post("/admin/staff")
@page()
async def new_staff(request: web.Request, console: Console) -> web.StreamResponse:
    async def run(data: dict[str, str]) -> None:
        fields: dict[str, Any] = {
            "username": data.get("username", "").strip(),
            "password": data.get("password", ""),
            "role": data.get("role", "cashier"),
        }
        if data.get("store_id", "").isdigit():
            fields["store_id"] = int(data["store_id"])
        body = parse(admin_staff.StaffCreateIn, fields)
        await api(request, console, admin_staff.create_staff, body=body)

    return await _submit(request, console, "new", "staff", run)


@routes.post(r"/admin/staff/{staff_id:\d+}/{action:deactivate|reactivate|unlock}")
@page()
async def staff_action(request: web.Request, console: Console) -> web.StreamResponse:
    staff_id, action = _id(request, "staff_id"), request.match_info["action"]

    async def run(data: dict[str, str]) -> None:
        path = parse(admin_staff.StaffPath, {"staff_id": staff_id})
        await api(request, console, STAFF_ACTIONS[action], path=path)

    return await _submit(request, console, f"staff{staff_id}", action, run)


@routes.post(r"/admin/staff/{staff_id:\d+}/password")
@page()
async def staff_password(request: web.Request, console: Console) -> web.StreamResponse:
    """Set another account's password (never logged, never in a URL); its sessions end at once."""
    staff_id = _id(request, "staff_id")

    async def run(data: dict[str, str]) -> None:
        path = parse(admin_staff.StaffPath, {"staff_id": staff_id})
        body = parse(admin_staff.PasswordIn, {"password": data.get("password", "")})
        await api(request, console, admin_staff.reset_password, body=body, path=path)

    return await _submit(request, console, f"staff{staff_id}", "password", run)


@routes.post(r"/admin/staff/{staff_id:\d+}/change")
@page(StaffRole.ADMIN)
async def staff_change(request: web.Request, console: Console) -> web.StreamResponse:
    staff_id = _id(request, "staff_id")

    async def run(data: dict[str, str]) -> None:
        path = parse(admin_staff.StaffPath, {"staff_id": staff_id})
        raw: dict[str, Any] = {"role": data.get("role", "")}
        store = data.get("store_id", "")
        raw["store_id"] = int(store) if store.isdigit() else None
        body = parse(admin_staff.StaffChangeIn, raw)
        await api(request, console, admin_staff.change_staff, body=body, path=path)

    return await _submit(request, console, f"staff{staff_id}", "change", run)


# Audit log ---------------------------------------------------------------------------------------


@routes.get("/admin/audit")
@page()
async def audit(request: web.Request, console: Console) -> web.StreamResponse:
    """Every change made in the back office, newest first (the API's audit log, `?cursor=` pages)."""
    entries = await api(request, console, admin_loyalty.audit_log)
    ids = {
        int(e.actor[6:]) for e in entries.entries if e.actor.startswith("staff:") and e.actor[6:].isdigit()
    }
    names = await accounts.usernames(console.merchant.id, ids)
    context = {
        "entries": entries.entries,
        "actors": {f"staff:{staff_id}": name for staff_id, name in names.items()},
        "next_url": f"/admin/audit?{urlencode({'cursor': entries.next_cursor})}"
        if entries.next_cursor
        else None,
    }
    return render(request, "audit.html", console, context, section="audit")
