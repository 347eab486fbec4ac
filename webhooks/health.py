"""GET /healthz: is the database reachable, is Redis reachable."""

from __future__ import annotations

import asyncio

from aiohttp import web
from tortoise import connections

from webhooks.appkeys import REDIS

CHECK_TIMEOUT = 2.0


async def _database_ok() -> bool:
    try:
        await asyncio.wait_for(connections.get("default").execute_query("SELECT 1"), CHECK_TIMEOUT)
    except Exception:
        return False
    return True


async def _redis_ok(request: web.Request) -> bool:
    try:
        return bool(await asyncio.wait_for(request.app[REDIS].ping(), CHECK_TIMEOUT))
    except Exception:
        return False


async def healthz(request: web.Request) -> web.Response:
    database, redis = await asyncio.gather(_database_ok(), _redis_ok(request))
    checks = {"database": "ok" if database else "down", "redis": "ok" if redis else "down"}
    healthy = database and redis
    return web.json_response(
        {"status": "ok" if healthy else "down", "checks": checks}, status=200 if healthy else 503
    )
