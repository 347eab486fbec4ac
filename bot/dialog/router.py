"""The intent router: a registry from keywords, menu keys, events and message kinds to handlers.

The idea comes from wechatpy's parser registry: every kind of input maps to one handler, and the
unknown has an explicit fallback — unknown text gets `fallback` (the help menu), an unknown message
kind gets `unsupported`, an unknown event gets no reply. A feature adds itself with one call:

    router.add_intent("checkin", checkin, keywords=("签到", "checkin"), menu_keys=("MENU_CHECKIN",))

Keywords are matched whole, after `normalise` (NFKC — full-width letters, digits, spaces and "？"
become half-width — whitespace collapsed, case-folded).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from handlers.core.chat import ChatReply

if TYPE_CHECKING:
    from bot.dialog.state import DialogState
    from bot.dialog.turn import Turn

Handler = Callable[["Turn"], Awaitable[ChatReply | None]]
FlowHandler = Callable[["Turn", "DialogState"], Awaitable[ChatReply | None]]
T = TypeVar("T")


def normalise(text: str) -> str:
    """What users type, in the form it is compared: NFKC, single spaces, trimmed (case kept)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def keyword_form(text: str) -> str:
    return normalise(text).casefold()


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    handler: Handler
    keywords: tuple[str, ...]
    menu_keys: tuple[str, ...]
    uses_dialog: bool = False  # reads `turn.state`: the dispatcher loads it first (one Redis read)


class Router:
    def __init__(self, *, fallback: Handler, unsupported: Handler) -> None:
        self.fallback = fallback
        self.unsupported = unsupported
        self.intents: dict[str, Intent] = {}
        self._keywords: dict[str, Intent] = {}
        self._menu_keys: dict[str, Intent] = {}
        self._events: dict[str, Handler] = {}
        self._kinds: dict[str, Handler] = {}
        self._flows: dict[str, FlowHandler] = {}

    def add_intent(
        self,
        name: str,
        handler: Handler,
        *,
        keywords: Iterable[str] = (),
        menu_keys: Iterable[str] = (),
        uses_dialog: bool = False,
    ) -> Intent:
        """Register an intent; a keyword or menu key already taken is a programming error. An intent that
        reads the member's open dialog (`turn.state`) says so with `uses_dialog=True`."""
        keys = tuple(keyword_form(k) for k in keywords)
        intent = Intent(name, handler, keys, tuple(menu_keys), uses_dialog)
        if name in self.intents:
            raise ValueError(f"intent {name!r} is already registered")
        _claim(self._keywords, intent.keywords, intent, "keyword")
        _claim(self._menu_keys, intent.menu_keys, intent, "menu key")
        self.intents[name] = intent
        return intent

    def add_event(self, event: str, handler: Handler) -> None:
        _claim(self._events, (event.lower(),), handler, "event")

    def add_kind(self, kind: str, handler: Handler) -> None:
        """A handler for a non-text message kind (image, voice, location, …)."""
        if kind in ("text", "event"):
            raise ValueError(f"{kind!r} messages are routed by keyword or event, not by kind")
        _claim(self._kinds, (kind,), handler, "message kind")

    def add_flow(self, flow: str, handler: FlowHandler) -> None:
        """The handler that receives a member's text while a dialog of this flow is open."""
        _claim(self._flows, (flow,), handler, "flow")

    def by_keyword(self, text: str) -> Intent | None:
        return self._keywords.get(keyword_form(text))

    def menu_keys(self) -> frozenset[str]:
        """Every CLICK key an intent answers (what a pushed menu's `click` buttons may use)."""
        return frozenset(self._menu_keys)

    def by_menu_key(self, key: str) -> Intent | None:
        return self._menu_keys.get(key.strip())

    def for_event(self, event: str) -> Handler | None:
        return self._events.get(event.lower())

    def for_kind(self, kind: str) -> Handler:
        return self._kinds.get(kind, self.unsupported)

    def for_flow(self, flow: str) -> FlowHandler | None:
        return self._flows.get(flow)


def _claim(registry: dict[str, T], names: Iterable[str], value: T, what: str) -> None:
    names = tuple(names)
    taken = [name for name in names if name in registry]
    if taken or not all(names):
        raise ValueError(f"{what} {taken or names!r} is empty or already registered")
    registry.update(dict.fromkeys(names, value))
