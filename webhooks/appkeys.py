"""Every app-wide object, as a typed web.AppKey. bot/'s factory sets them; webhooks read them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aiohttp import ClientSession, web
from redis.asyncio import Redis

from handlers.campaigns.sms import SmsProvider
from handlers.core.schedule import Scheduler, SchedulerConfig
from handlers.core.tasks import Effects

if TYPE_CHECKING:
    from handlers.core.background import Background
    from handlers.core.chat import ChatReply, IncomingMessage, Prefetched
    from handlers.core.templating import Renderer
    from handlers.wechat.client import WeChatClient
    from models.merchant import Merchant


class ChatDispatcher(Protocol):
    """The chat bot: turns one incoming Official Account message into at most one reply. `menu_keys`:
    the CLICK keys it answers (a pushed menu's `click` buttons must use them)."""

    @property
    def menu_keys(self) -> frozenset[str]: ...

    async def dispatch(
        self, merchant: Merchant, message: IncomingMessage, dialog: Prefetched | None = None
    ) -> ChatReply | None: ...


class Runtime(Protocol):
    """Plain values the endpoints need from settings (webhooks never import bot/)."""

    @property
    def secret(self) -> bytes: ...
    @property
    def base_url(self) -> str: ...
    @property
    def max_body_bytes(self) -> int: ...


REDIS: web.AppKey[Redis] = web.AppKey("redis")
HTTP: web.AppKey[ClientSession] = web.AppKey("http")
RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
RENDERER: web.AppKey[Renderer] = web.AppKey("renderer")
WECHAT: web.AppKey[WeChatClient] = web.AppKey("wechat")
DISPATCHER: web.AppKey[ChatDispatcher] = web.AppKey("dispatcher")
BACKGROUND: web.AppKey[Background] = web.AppKey("background")
EFFECTS: web.AppKey[Effects] = web.AppKey("effects", Effects)
SMS: web.AppKey[SmsProvider] = web.AppKey("sms")  # campaign SMS (SMS_PROVIDER): what test sends use too
# The embedded scheduler (memory:// only): tests set its config before start-up and read what it ran.
SCHEDULER_CONFIG: web.AppKey[SchedulerConfig] = web.AppKey("scheduler_config", SchedulerConfig)
SCHEDULER: web.AppKey[Scheduler] = web.AppKey("scheduler", Scheduler)
