"""Database and Redis set-up for tests, outside any app (plain asyncpg / redis clients)."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis
from tortoise import Tortoise
from tortoise.migrations.api import migrate as run_migrations

from models import tortoise_config


def dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def worker_database(url: str, worker: str) -> str:
    """`url`'s server, database `<name>_<worker>` (created if missing): one per pytest-xdist worker."""
    base, _, name = url.rpartition("/")
    name, _, query = name.partition("?")
    worker_name = f"{name}_{worker}"
    conn = await asyncpg.connect(dsn(f"{base}/postgres" + (f"?{query}" if query else "")))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", worker_name):
            await conn.execute(f'CREATE DATABASE "{worker_name}"')
    finally:
        await conn.close()
    return f"{base}/{worker_name}" + (f"?{query}" if query else "")


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


_TABLES_SQL = (
    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'tortoise_migrations'"
)
_tables: dict[str, list[str]] = {}


async def truncate_postgres(url: str) -> None:
    """Empty every table a test may have written (TRUNCATE … RESTART IDENTITY, so ids start at 1 again).

    TRUNCATE costs a file swap per table, so only the tables that hold rows, or whose sequence has
    moved (a rolled-back insert), are truncated: found in one query."""
    conn = await asyncpg.connect(dsn(url))
    try:
        if url not in _tables:
            _tables[url] = [row["tablename"] for row in await conn.fetch(_TABLES_SQL)]
        probes = " UNION ALL ".join(
            f"SELECT '{name}' AS name WHERE EXISTS (SELECT 1 FROM \"{name}\")"  # noqa: S608 - catalogue names
            f" OR COALESCE((SELECT last_value IS NOT NULL FROM pg_sequences"
            f" WHERE schemaname = 'public' AND sequencename = '{name}_id_seq'), false)"
            for name in _tables[url]
        )
        dirty = [row["name"] for row in await conn.fetch(probes)] if probes else []
        if dirty:
            names = ", ".join(f'"{name}"' for name in dirty)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


async def flush_redis(url: str) -> None:
    redis = Redis.from_url(url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()
