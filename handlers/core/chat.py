"""What the chat bot receives and answers, independent of WeChat's XML."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One Official Account push: a user message or an event, already parsed and deduplicated."""

    openid: str
    kind: str  # "text", "image", …, or "event"
    created_at: datetime
    content: str = ""  # text messages
    event: str = ""  # lower-case event name: subscribe, unsubscribe, scan, click, view, location, …
    event_key: str = ""  # scene for subscribe (without qrscene_) and SCAN; menu key for CLICK
    msg_id: str = ""
    raw: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


def dialog_key(merchant_id: int, openid: str) -> str:
    """Where a member's open dialog lives in Redis (`bot.dialog.state`; the WeChat callback reads it
    in its dedup claim's round trip)."""
    return f"dialog:{merchant_id}:{openid}"


@dataclass(frozen=True, slots=True)
class Prefetched:
    """A member's dialog state as read with the push's dedup claim: its raw value, None for no dialog."""

    raw: bytes | None


@dataclass(frozen=True, slots=True)
class TextReply:
    text: str


@dataclass(frozen=True, slots=True)
class Article:
    title: str
    description: str
    url: str
    image: str = ""


@dataclass(frozen=True, slots=True)
class NewsReply:
    articles: tuple[Article, ...]


@dataclass(frozen=True, slots=True)
class ImageReply:
    """An image the account uploaded as media (`media_id`, valid three days)."""

    media_id: str


ChatReply = TextReply | NewsReply | ImageReply
