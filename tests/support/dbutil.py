"""Database and Redis set-up for tests, outside any app (plain asyncpg / redis clients)."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis
from tortoise import Tortoise
from tortoise.migrations.api import migrate as run_migrations

from models import tortoise_config


def dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def reset_postgres(url: str) -> None:
    conn = await asyncpg.connect(dsn(url))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


async def migrate(url: str) -> None:
    try:
        await run_migrations(config=tortoise_config(url))
    finally:
        await Tortoise.close_connections()


async def truncate_postgres(url: str) -> None:
    conn = await asyncpg.connect(dsn(url))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> 'tortoise_migrations'"
        )
        if tables:
            names = ", ".join(f'"{row["tablename"]}"' for row in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


async def flush_redis(url: str) -> None:
    redis = Redis.from_url(url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()
