"""One incoming message being answered: the merchant, the message, its dialog state, the member."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.dialog.state import DialogState, DialogStore
from handlers.core.background import Background
from handlers.core.chat import IncomingMessage, TextReply
from handlers.core.errors import DomainError
from handlers.core.tasks import Effects
from handlers.core.templating import Renderer
from handlers.members import lookup as members
from handlers.members import registration
from handlers.members.phone_link import PhoneCodes
from handlers.wechat.client import WeChatClient, oa_credentials
from models.member import Member
from models.merchant import Merchant

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """The collaborators every handler may use (the Dispatcher's, shared by all turns)."""

    renderer: Renderer
    dialogs: DialogStore
    secret: bytes
    base_url: str
    effects: Effects
    wechat: WeChatClient | None = None
    background: Background | None = None
    phone_codes: PhoneCodes | None = None  # None: imported members are not linked by phone


class _NotLoaded:
    """The dialog state of a turn that did not load it (see `Intent.uses_dialog`)."""


NOT_LOADED = _NotLoaded()


@dataclass(slots=True)
class Turn:
    merchant: Merchant
    message: IncomingMessage
    services: Services
    loaded_state: DialogState | _NotLoaded | None = NOT_LOADED
    text: str = ""  # the normalised text of a text message
    _member: Member | None = field(default=None, repr=False)
    _looked_up: bool = field(default=False, repr=False)

    @property
    def openid(self) -> str:
        return self.message.openid

    @property
    def state(self) -> DialogState | None:
        """The member's open dialog, if any. Loaded only for handlers that declared they read it, so a
        handler that reads it without declaring so fails loudly instead of seeing "no dialog"."""
        if isinstance(self.loaded_state, _NotLoaded):
            raise RuntimeError("this turn did not load the dialog state: register with uses_dialog=True")
        return self.loaded_state

    @property
    def in_dialog(self) -> bool:
        return self.state is not None

    def now(self) -> datetime:
        return datetime.now(UTC)

    def today(self) -> date:
        """Today in the merchant's timezone (a birthday is a calendar date there)."""
        try:
            zone = ZoneInfo(self.merchant.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("Asia/Shanghai")
        return self.now().astimezone(zone).date()

    async def member(self) -> Member | None:
        """The member behind this openid (looked up once per turn)."""
        if not self._looked_up:
            self._member = await members.by_openid(self.merchant, self.openid)
            self._looked_up = True
        return self._member

    async def ensure_member(self) -> Member:
        """The member, created or relinked if unknown (a follower from before the bot, say)."""
        member = await self.member()
        if member is None:
            subscription = await registration.subscribe(
                self.merchant,
                self.openid,
                "",
                secret=self.services.secret,
                effects=self.services.effects,
                unionid=await self.unionid(),
            )
            member = self._member = subscription.member
        return member

    async def unionid(self) -> str | None:
        """The follower's unionid from WeChat (None without an Open Platform binding, credentials, or
        an answer: registration then proceeds without it)."""
        wechat = self.services.wechat
        if wechat is None or not (self.merchant.oa_appid and self.merchant.oa_secret):
            return None
        try:
            return await wechat.user_unionid(oa_credentials(self.merchant), self.openid)
        except DomainError as exc:
            log.warning("unionid not fetched: %s", type(exc).__name__, extra={"merchant": self.merchant.slug})
            return None

    async def reply(self, template: str, /, **context: Any) -> TextReply:
        """Render reply `template` (the merchant's override if any); `merchant_name` is always set."""
        context.setdefault("merchant_name", self.merchant.name)
        return TextReply(await self.services.renderer.reply(self.merchant.id, template, **context))

    async def save_state(self, state: DialogState) -> None:
        await self.services.dialogs.save(self.merchant.id, self.openid, state)
        self.loaded_state = state

    async def clear_state(self) -> bool:
        self.loaded_state = None
        return await self.services.dialogs.clear(self.merchant.id, self.openid)
