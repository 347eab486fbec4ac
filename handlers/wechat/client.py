"""Async WeChat API client (being written)."""

from __future__ import annotations

from aiohttp import ClientSession
from redis.asyncio import Redis


class WeChatClient:
    def __init__(self, session: ClientSession, redis: Redis, api_base: str) -> None:
        self.session = session
        self.redis = redis
        self.api_base = api_base.rstrip("/")
