"""Once-only handling of WeChat pushes, and the same answer for every retry.

WeChat retries a push three times when it has no answer within 5 s. The first request claims the
push's key (SET NX with a TTL); the key then holds the reply once it is known, so a retry or a
concurrent duplicate gets the same reply without anything happening twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from redis.asyncio import Redis

from handlers.chat import Article, ChatReply, NewsReply, TextReply

TTL_SECONDS = 300
POLL_SECONDS = 0.05
_PENDING = b"pending"
# Answered with an empty body: no reply, or the reply went out later as a customer-service message.
_EMPTY = b"empty"


def _key(merchant_id: int, push_key: str) -> str:
    return f"wx:push:{merchant_id}:{push_key}"


async def claim(redis: Redis, merchant_id: int, push_key: str) -> bool:
    """True for the first delivery of a push (the caller then handles it); False for a duplicate."""
    return bool(await redis.set(_key(merchant_id, push_key), _PENDING, nx=True, ex=TTL_SECONDS))


async def remember(redis: Redis, merchant_id: int, push_key: str, reply: ChatReply | None) -> None:
    """Record the answer given for a claimed push, for its retries."""
    await redis.set(_key(merchant_id, push_key), encode(reply), ex=TTL_SECONDS)


async def earlier_answer(redis: Redis, merchant_id: int, push_key: str, *, until: float) -> ChatReply | None:
    """The reply the first delivery gave, polling until `until` (monotonic) while it is being worked out.

    None (an empty body) if that delivery answered nothing, or has not answered by the deadline.
    """
    key = _key(merchant_id, push_key)
    while True:
        value = await redis.get(key)
        if value is None:
            return None
        if value != _PENDING:
            return decode(value)
        if time.monotonic() >= until:
            return None
        await asyncio.sleep(POLL_SECONDS)


def encode(reply: ChatReply | None) -> bytes:
    data: dict[str, Any]
    if reply is None:
        return _EMPTY
    if isinstance(reply, TextReply):
        data = {"text": reply.text}
    else:
        data = {"articles": [[a.title, a.description, a.url, a.image] for a in reply.articles]}
    return json.dumps(data, ensure_ascii=False).encode()


def decode(value: bytes) -> ChatReply | None:
    if value == _EMPTY:
        return None
    data = json.loads(value)
    if "text" in data:
        return TextReply(str(data["text"]))
    return NewsReply(tuple(Article(*map(str, item)) for item in data["articles"]))
