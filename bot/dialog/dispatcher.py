"""The Dispatcher: turns one incoming Official Account message into at most one reply.

- text: a keyword intent wins (also during a dialog, which stays open — except 取消, which ends it);
  otherwise an open dialog receives the text; otherwise the fallback (the help menu), never silence.
- event CLICK: the menu key's intent; an unknown key gets the help menu (the member tapped something).
- other events: the registered handler (subscribe, SCAN, unsubscribe); an unknown event gets no reply.
- any other message kind: its registered handler, else the polite "text only" reply.

Cost of the hot path (帮助): one render, no member lookup; the dialog state comes with the WeChat
callback's dedup claim (`dialog`), else one Redis GET. An intent that does not read the dialog
(`uses_dialog=False`, e.g. 签到) never looks at it.
"""

from __future__ import annotations

from redis.asyncio import Redis

from bot.dialog.intents import build_router
from bot.dialog.router import Intent, Router, normalise
from bot.dialog.state import DEFAULT_TTL_SECONDS, DialogStore
from bot.dialog.turn import Services, Turn
from handlers.core.background import Background
from handlers.core.chat import ChatReply, IncomingMessage, Prefetched
from handlers.core.tasks import Effects
from handlers.core.templating import Renderer
from handlers.members.phone_link import PhoneCodes
from handlers.wechat.client import WeChatClient
from models.merchant import Merchant


class Dispatcher:
    def __init__(
        self,
        *,
        redis: Redis,
        renderer: Renderer,
        secret: bytes,
        base_url: str,
        effects: Effects,
        wechat: WeChatClient | None = None,
        background: Background | None = None,
        router: Router | None = None,
        dialog_ttl: float = DEFAULT_TTL_SECONDS,
        phone_codes: PhoneCodes | None = None,
    ) -> None:
        self.router = router or build_router()
        self.dialogs = DialogStore(redis, ttl_seconds=dialog_ttl)
        self.services = Services(
            renderer=renderer,
            dialogs=self.dialogs,
            secret=secret,
            base_url=base_url,
            effects=effects,
            wechat=wechat,
            background=background,
            phone_codes=phone_codes,
        )

    @property
    def menu_keys(self) -> frozenset[str]:
        return self.router.menu_keys()

    async def dispatch(
        self, merchant: Merchant, message: IncomingMessage, dialog: Prefetched | None = None
    ) -> ChatReply | None:
        """The reply to one message; `dialog`: the member's dialog state if the caller read it already."""
        if message.kind == "event":
            return await self._event(merchant, message, dialog)
        if message.kind == "text":
            return await self._text(merchant, message, dialog)
        return await self.router.for_kind(message.kind)(Turn(merchant, message, self.services))

    async def _text(
        self, merchant: Merchant, message: IncomingMessage, dialog: Prefetched | None
    ) -> ChatReply | None:
        text = normalise(message.content)
        intent = self.router.by_keyword(text)
        if intent is not None:
            return await intent.handler(await self._turn(merchant, message, dialog, intent, text=text))
        turn = await self._turn(merchant, message, dialog, text=text)
        if turn.state is not None:
            flow = self.router.for_flow(turn.state.flow)
            if flow is not None:
                return await flow(turn, turn.state)
            await turn.clear_state()  # a flow this release no longer has
        return await self.router.fallback(turn)

    async def _event(
        self, merchant: Merchant, message: IncomingMessage, dialog: Prefetched | None
    ) -> ChatReply | None:
        event = message.event.lower()
        if event == "click":
            intent = self.router.by_menu_key(message.event_key)
            turn = await self._turn(merchant, message, dialog, intent)
            return await (intent.handler if intent is not None else self.router.fallback)(turn)
        handler = self.router.for_event(event)
        if handler is None:
            return None
        return await handler(Turn(merchant, message, self.services))

    async def _turn(
        self,
        merchant: Merchant,
        message: IncomingMessage,
        dialog: Prefetched | None,
        intent: Intent | None = None,
        *,
        text: str = "",
    ) -> Turn:
        """A turn with the member's dialog state loaded (or taken as `dialog` read it), unless `intent`
        is known not to read it."""
        turn = Turn(merchant, message, self.services, text=text)
        if intent is None or intent.uses_dialog:
            turn.loaded_state = (
                self.dialogs.parse(dialog.raw)
                if dialog is not None
                else await self.dialogs.load(merchant.id, message.openid)
            )
        return turn
