"""Every app-wide object, as a typed web.AppKey. bot/'s factory sets them; webhooks read them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aiohttp import ClientSession, web
from redis.asyncio import Redis

if TYPE_CHECKING:
    from handlers.background import Background
    from handlers.chat import ChatReply, IncomingMessage
    from handlers.templating import Renderer
    from handlers.wechat.client import WeChatClient
    from models.merchant import Merchant


class ChatDispatcher(Protocol):
    """The chat bot: turns one incoming Official Account message into at most one reply."""

    async def dispatch(self, merchant: Merchant, message: IncomingMessage) -> ChatReply | None: ...


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
