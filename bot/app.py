"""The application factory: one `create_app(settings)` for `memberbot serve` and the tests alike."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from tortoise import Tortoise

from bot.dialog import Dispatcher
from bot.scheduler import embedded_scheduler
from bot.settings import ROOT, Settings
from handlers import bonuses, coupons, loyalty_config
from handlers.background import Background
from handlers.templating import Renderer
from handlers.wechat.client import WeChatClient
from models import tortoise_config
from webhooks.appkeys import BACKGROUND, DISPATCHER, HTTP, REDIS, RENDERER, RUNTIME, WECHAT
from webhooks.errors import error_middleware
from webhooks.middlewares import request_id_middleware
from webhooks.routes import setup_routes

log = logging.getLogger(__name__)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")


@dataclass(frozen=True, slots=True)
class Runtime:
    secret: bytes
    base_url: str
    max_body_bytes: int


def connect_redis(url: str) -> Redis:
    """`memory://` is an in-process fakeredis (single process only); anything else is real Redis."""
    if url.startswith("memory://"):
        from fakeredis import FakeServer
        from fakeredis.aioredis import FakeRedis

        return FakeRedis(server=FakeServer(), decode_responses=False)
    return Redis.from_url(url, decode_responses=False, health_check_interval=30)


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    await Tortoise.init(config=tortoise_config(settings.database_url), _enable_global_fallback=True)
    loyalty_config.clear_cache()  # cached configuration belongs to the database this app opened
    yield
    await Tortoise.close_connections()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    redis = connect_redis(settings.redis_url)
    if settings.redis_url.startswith("memory://"):
        log.warning("REDIS_URL=memory:// keeps Redis in this process: run a single process only")
    app[REDIS] = redis
    yield
    await redis.aclose()


async def _http(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=10, connect=3)
    async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
        app[HTTP] = session
        app[WECHAT] = WeChatClient(session, app[REDIS], app[SETTINGS].wechat_api_base)
        yield


async def _chat(app: web.Application) -> AsyncIterator[None]:
    background = Background()
    app[BACKGROUND] = background
    app[DISPATCHER] = Dispatcher(
        redis=app[REDIS], renderer=app[RENDERER], wechat=app[WECHAT], background=background,
        base_url=app[RUNTIME].base_url, secret=app[RUNTIME].secret,
    )
    yield
    await background.drain()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_id_middleware, error_middleware],
    )
    app[SETTINGS] = settings
    app[RUNTIME] = Runtime(
        secret=settings.secret(), base_url=settings.base_url(), max_body_bytes=settings.max_body_bytes
    )
    app[RENDERER] = Renderer(ROOT / "templates")
    app.cleanup_ctx.extend([_database, _redis, _http, _chat, embedded_scheduler])
    setup_routes(app)
    bonuses.install()
    coupons.install()
    return app
