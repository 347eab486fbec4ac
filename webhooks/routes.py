"""Every route memberbot serves."""

from __future__ import annotations

from aiohttp import web

from webhooks import health, wechat


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz)
    wechat.setup(app)
