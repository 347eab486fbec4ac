"""The merchant's web console under /admin: server-rendered jinja2 pages (aiohttp-jinja2, templates under
templates/admin/), htmx and Apache ECharts served from `static/` (see `static/vendor/VENDORED.md`).

Pages are thin like the JSON API: they parse a form, call the same use cases in `handlers/` the admin
API calls, and render the result. `webhooks.console.base` holds what every page shares (login, CSRF,
errors), `webhooks.console.security` the session cookie, the CSRF tokens and the security headers.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from webhooks.console import (
    analytics,
    campaigns,
    cards,
    coupon_edit,
    credit_settings,
    dashboard,
    deal_edit,
    login,
    mall,
    mall_orders,
    member_wallet,
    members,
    notice_admin,
    products,
    programme,
    segments,
    settings,
    staffing,
    store_edit,
    tag_edit,
)
from webhooks.console.base import error_page, fen_to_yuan, local_time
from webhooks.console.security import add_headers, console_of

STATIC = Path(__file__).resolve().parent / "static"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "admin"


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/admin" or request.path.startswith("/admin/"):
        add_headers(response)


def setup(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(("html",), default=True),
    )
    env.filters["yuan"] = fen_to_yuan
    env.filters["at"] = local_time
    app.on_response_prepare.append(_headers)
    app.router.add_get("/admin", _to_root)
    app.router.add_get("/admin/login", login.login_page)
    app.router.add_post("/admin/login", login.login_submit)
    app.router.add_post("/admin/logout", login.logout)
    app.router.add_static("/admin/static", STATIC, append_version=False)
    for table in (
        dashboard.routes,
        members.routes,
        member_wallet.routes,
        credit_settings.routes,
        programme.routes,
        coupon_edit.routes,
        mall.routes,
        mall_orders.routes,
        cards.routes,
        analytics.routes,
        campaigns.routes,
        products.routes,
        notice_admin.routes,
        settings.routes,
        staffing.routes,
        store_edit.routes,
        segments.routes,
        tag_edit.routes,
        deal_edit.routes,
    ):
        app.router.add_routes(table)
    app.router.add_route("*", "/admin/{tail:.*}", _not_found)  # last: only what no page matched


async def _not_found(request: web.Request) -> web.Response:
    """An unknown console address: an HTML page (the JSON API's 404 is for API clients)."""
    console = await console_of(request)
    return error_page(request, console, 404, "没有这个页面，请从菜单进入。")


async def _to_root(request: web.Request) -> web.Response:
    return web.Response(status=301, headers={"Location": "/admin/"})
