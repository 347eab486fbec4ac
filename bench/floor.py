"""The floors: bare aiohttp handlers doing the least work a benchmark's real path must do.

- Purchases and flash sales: their baselines run without HTTP; `/api/staff/purchases` and `/floor/flash`
  put exactly the baseline's work (nothing more: no auth, no rules, no ORM) behind one aiohttp
  endpoint, so a benchmark shows what HTTP alone costs on this machine.
- 签到: the baseline is a bare webhook that touches no store. `/wechat/{slug}` here is that webhook plus
  the two round trips a check-in cannot do without: the Redis claim that makes a push take effect once
  (WeChat retries), and one SQL statement writing the day's check-in.

A target above a floor's ratio cannot be met by any aiohttp endpoint here, whatever it does. Run:

    python -m bench.floor --port N --database-url URL --redis-url URL --merchant-id M --flash-sale-id S
"""

from __future__ import annotations

import argparse
import hmac
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from redis.asyncio import Redis
from wechatpy import parse_message
from wechatpy.replies import TextReply

from bench.baseline import healthz, signature
from bench.purchase_endpoint import raw_purchase
from bot.demo import DEMO
from handlers.mall import flash

POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)
REDIS: web.AppKey[Redis] = web.AppKey("redis", Redis)
OPTIONS: web.AppKey[argparse.Namespace] = web.AppKey("options", argparse.Namespace)
FLASH_TABLE = "bench_flash_floor"
FLASH_LIMIT = 2
CHECKIN_TABLE = "bench_checkin_floor"
CHECKIN_SQL = f"insert into {CHECKIN_TABLE} (openid, day) values ($1, $2) on conflict do nothing returning id"


async def purchase(request: web.Request) -> web.Response:
    """The purchase baseline's transaction (lock, purchase row, posting, lot, balance) per request."""
    body: dict[str, Any] = await request.json()
    async with request.app[POOL].acquire() as conn:
        await raw_purchase(
            conn,
            request.app[OPTIONS].merchant_id,
            int(body["member_id"]),
            str(body["idempotency_key"]),
            int(body["amount_fen"]),
        )
    return web.json_response({"ok": True})


async def flash_attempt(request: web.Request) -> web.Response:
    """The flash-sale baseline's attempt: the Lua gate by EVALSHA, one INSERT when a unit is taken."""
    body: dict[str, Any] = await request.json()
    member, key = int(body["member"]), str(body["idempotency_key"])
    keys = flash.gate_keys(request.app[OPTIONS].flash_sale_id)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    verdict = await flash.run_gate(request.app[REDIS], keys, "take", member, FLASH_LIMIT, key, now_ms)
    if verdict == "taken":
        insert = f"insert into {FLASH_TABLE} (member, key) values ($1, $2)"
        await request.app[POOL].execute(insert, member, key)
        return web.json_response({"verdict": verdict})
    return web.json_response({"verdict": verdict}, status=409)


async def checkin(request: web.Request) -> web.Response:
    """A plaintext 签到: signature, parse, the once-only Redis claim, one INSERT, a text reply."""
    query = request.query
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    if not hmac.compare_digest(signature(DEMO.oa_token, timestamp, nonce), query.get("signature", "")):
        raise web.HTTPForbidden()
    message = parse_message(await request.text())
    if not await request.app[REDIS].set(f"floor:msg:{message.id}", 1, nx=True, ex=300):
        return web.Response(text="")  # a retry: the first delivery answers
    day = datetime.now(UTC).date()
    written = await request.app[POOL].fetchval(CHECKIN_SQL, message.source, day)
    reply = TextReply(content="签到成功" if written else "今天已经签到过了", message=message).render()
    return web.Response(text=reply, content_type="application/xml")


def create_app(options: argparse.Namespace) -> web.Application:
    app = web.Application()
    app[OPTIONS] = options

    async def resources(app: web.Application) -> Any:
        app[POOL] = await asyncpg.create_pool(options.database_url, min_size=16, max_size=16)
        app[REDIS] = Redis.from_url(options.redis_url)
        yield
        await app[REDIS].aclose()
        await app[POOL].close()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/staff/purchases", purchase)
    app.router.add_post("/floor/flash", flash_attempt)
    app.router.add_post("/wechat/{merchant_slug}", checkin)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--merchant-id", type=int, default=0)
    parser.add_argument("--flash-sale-id", type=int, default=-1)
    options = parser.parse_args()
    web.run_app(create_app(options), host="127.0.0.1", port=options.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
