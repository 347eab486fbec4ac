"""The app's Redis client hands out pooled connections without probing each one, yet a connection Redis
closed, or one left with an unread reply, is reconnected rather than failing or answering wrongly."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from bot.app import connect_redis


@pytest.fixture
def real_redis(redis_url: str) -> str:
    if redis_url.startswith("memory://"):
        pytest.skip("needs a real Redis (MEMBERBOT_TEST_REDIS_URL)")
    return redis_url


async def test_a_connection_redis_closed_is_reconnected(real_redis: str) -> None:
    client, admin = connect_redis(real_redis), Redis.from_url(real_redis)
    try:
        await client.set("k", "v")
        pooled = await client.client_id()  # the pool's one idle connection: kill only it, not other tests'
        killed = await admin.client_kill_filter(_id=pooled)
        assert killed == 1
        await asyncio.sleep(0.05)  # the event loop sees the connection's EOF
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()
        await admin.aclose()


async def test_a_connection_with_an_unread_reply_is_not_reused_as_is(real_redis: str) -> None:
    client = connect_redis(real_redis)
    try:
        await client.set("k", "v")
        pool = client.connection_pool
        connection = await pool.get_connection()
        await connection.send_command("PING")  # its reply is never read
        await pool.release(connection)
        await asyncio.sleep(0.05)
        assert await client.get("k") == b"v"  # not the stale PONG
        assert await client.incr("n") == 1
    finally:
        await client.aclose()
