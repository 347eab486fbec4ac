"""Every route memberbot serves."""

from __future__ import annotations

from aiohttp import web

from webhooks import admin, admin_loyalty, api, mp, openapi, staff, wechat


def setup_routes(app: web.Application) -> None:
    api.mount(app, openapi.routes, mp.routes, staff.routes, admin.routes, admin_loyalty.routes)
    wechat.setup(app)
