"""The application factory: one `create_app(settings)` for `memberbot serve` and the tests alike."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from tortoise import Tortoise

from bot.demo import DEMO
from bot.dialog import Dispatcher
from bot.scheduler import embedded_scheduler
from bot.settings import ROOT, WECHAT_SIM_PREFIX, Settings
from bot.wechat_sim import SimState, create_sim_app
from bot.worker import arq_batch_dispatch, sms_provider
from handlers import effects
from handlers.core import config_cache, queries
from handlers.core.background import Background
from handlers.core.templating import Renderer
from handlers.members.phone_link import PhoneCodes
from handlers.notices.delivery import NoticeServices
from handlers.wechat.client import WeChatClient
from models import read_client, tortoise_config
from webhooks.appkeys import BACKGROUND, DISPATCHER, EFFECTS, HTTP, REDIS, RENDERER, RUNTIME, SMS, WECHAT
from webhooks.errors import error_middleware
from webhooks.middlewares import request_id_middleware
from webhooks.routes import setup_routes

log = logging.getLogger(__name__)
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


@dataclass(frozen=True, slots=True)
class Runtime:
    secret: bytes
    base_url: str
    max_body_bytes: int


class _ReadyPool(ConnectionPool):
    """redis-py's pool without its per-command probe of an idle connection that is plainly usable.

    Before every command redis-py's pool checks the connection it hands out by a read with a zero
    timeout (`can_read_destructive`: a timeout context, a read attempt, its cancellation), to catch a
    connection Redis closed or one with unread data. The event loop already reads every connection, so
    both show without a read: Redis closing it marks its reader at EOF, unread data sits in its reader's
    buffer or the parser's. Only such a connection (or one not connected) takes redis-py's own check,
    which reconnects it; the rest are handed out as they are."""

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        reader: asyncio.StreamReader | None = getattr(connection, "_reader", None)
        parser = getattr(getattr(connection, "_parser", None), "_reader", None)  # hiredis.Reader
        if (
            connection.is_connected
            and reader is not None
            and not reader.at_eof()
            and reader.exception() is None
            and not getattr(reader, "_buffer", True)
            and parser is not None
            and not parser.has_data()
        ):
            return
        await super().ensure_connection(connection)


def connect_redis(url: str) -> Redis:
    """`memory://` is an in-process fakeredis (single process only); anything else is real Redis."""
    if url.startswith("memory://"):
        from fakeredis import FakeServer
        from fakeredis.aioredis import FakeRedis

        client: Redis = FakeRedis(server=FakeServer(), decode_responses=False)
    else:
        client = Redis.from_pool(_ReadyPool.from_url(url, decode_responses=False, health_check_interval=30))
    return client


def _database(settings: Settings) -> CleanupContext:
    async def database(app: web.Application) -> AsyncIterator[None]:
        await Tortoise.init(config=tortoise_config(settings.database_url), _enable_global_fallback=True)
        config_cache.forget()  # cached configuration belongs to the database this app opened
        replica = read_client(settings.database_read_url) if settings.database_read_url else None
        if replica is not None:  # analyses and exports read the streaming replica
            await replica.create_connection(with_db=True)
        queries.use_read_client(replica)
        yield
        queries.use_read_client(None)
        if replica is not None:
            await replica.close()
        await Tortoise.close_connections()

    return database


def _redis(settings: Settings) -> CleanupContext:
    async def redis(app: web.Application) -> AsyncIterator[None]:
        client = connect_redis(settings.redis_url)
        if settings.redis_url.startswith("memory://"):
            log.warning("REDIS_URL=memory:// keeps Redis in this process: run a single process only")
        app[REDIS] = client
        yield
        await client.aclose()

    return redis


def _http(settings: Settings) -> CleanupContext:
    async def http(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=10, connect=3)
        async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
            app[HTTP] = session
            app[WECHAT] = WeChatClient(session, app[REDIS], settings.wechat_api_url())
            yield

    return http


async def _background(app: web.Application) -> AsyncIterator[None]:
    background = Background()
    app[BACKGROUND] = background
    yield
    await background.drain()


def _chat(settings: Settings) -> CleanupContext:
    async def chat_ctx(app: web.Application) -> AsyncIterator[None]:
        template = settings.sms_verify_template_id
        app[DISPATCHER] = Dispatcher(
            redis=app[REDIS],
            renderer=app[RENDERER],
            wechat=app[WECHAT],
            background=app[BACKGROUND],
            base_url=app[RUNTIME].base_url,
            secret=app[RUNTIME].secret,
            effects=app[EFFECTS],
            phone_codes=PhoneCodes(app[REDIS], app[SMS], template) if template else None,
        )
        yield

    return chat_ctx


def _effects(settings: Settings) -> CleanupContext:
    """The durable effects registry, able to send notices, and how queued tasks reach a runner
    promptly: arq jobs for the worker processes, or (memory://) background tasks of this process.
    Either way the sweep (`effects_sweep`) catches what is missed."""

    async def effects_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SMS] = sms_provider(settings, app[WECHAT].session)
        registry = effects.build(services=NoticeServices(app[WECHAT], app[REDIS]), sms=app[SMS])
        app[EFFECTS] = registry
        background = app[BACKGROUND]
        if settings.redis_url.startswith("memory://"):

            async def in_process(task_ids: Sequence[int]) -> None:
                background.spawn(registry.run_many(list(task_ids)), name=f"tasks:{task_ids[0]}")

            registry.dispatch = in_process
        else:  # one script call per batch of tasks on this app's connection (a Redis that is down shows
            # in /healthz instead of stopping the start)
            enqueue = arq_batch_dispatch(app[REDIS])

            async def enqueue_all(task_ids: Sequence[int]) -> None:
                await enqueue(task_ids)

            async def after_responding(task_ids: Sequence[int]) -> None:  # not on the request's clock
                background.spawn(enqueue_all(task_ids), name="dispatch")

            registry.dispatch = after_responding
        yield

    return effects_ctx


async def frozen_heap(app: web.Application) -> AsyncIterator[None]:
    """Once everything is open, move what exists (modules, models, templates, pools: about 150,000
    objects) out of the collector's reach: a full collection then walks only what requests made since,
    instead of pausing every request in flight for the whole heap (about 80 ms of CPU here). No
    collection first (seconds of wall time at start on a loaded machine; what is garbage now is a few
    cycles, kept). For a serving process (`memberbot serve` appends it last); unfrozen at shutdown."""
    gc.freeze()
    yield
    gc.unfreeze()


def mount_wechat_sim(app: web.Application, settings: Settings) -> None:
    """Demo mode without WECHAT_API_BASE: the WeChat API simulator as a sub-app under WECHAT_SIM_PREFIX
    (API and /sim control routes), knowing the demo merchant's Official Account and mini-program, so the
    client (pointed at this app's own loopback URL) fetches tokens and redeems login codes from it."""
    state = SimState()
    for appid, secret in ((DEMO.oa_appid, DEMO.oa_secret), (DEMO.mp_appid, DEMO.mp_secret)):
        state.add_app(appid, secret)
    app.add_subapp(WECHAT_SIM_PREFIX, create_sim_app(state))
    url = settings.wechat_api_url()

    async def announce(app: web.Application) -> AsyncIterator[None]:
        log.info(
            "WECHAT_API_BASE unset in demo mode: the WeChat API simulator serves the WeChat API in-process "
            "at %s (demo apps %s, %s; login codes: POST %s/sim/codes)",
            url,
            DEMO.oa_appid,
            DEMO.mp_appid,
            url,
        )
        yield

    app.cleanup_ctx.append(announce)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_id_middleware, error_middleware],
    )
    app[RUNTIME] = Runtime(
        secret=settings.secret(), base_url=settings.base_url(), max_body_bytes=settings.max_body_bytes
    )
    app[RENDERER] = Renderer(ROOT / "templates")
    app.cleanup_ctx.extend(
        [
            _database(settings),
            _redis(settings),
            _http(settings),
            _background,
            _effects(settings),
            _chat(settings),
        ]
    )
    if settings.redis_url.startswith("memory://"):  # no worker process: this one runs the jobs
        app.cleanup_ctx.append(embedded_scheduler)
    setup_routes(app)
    if settings.wechat_sim_in_process:
        mount_wechat_sim(app, settings)
    return app
