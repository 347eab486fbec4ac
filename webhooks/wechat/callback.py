"""The Official Account callback `/wechat/{merchant_slug}`: URL verification (GET) and message push (POST).

POST accepts plaintext, compatible and safe (AES) modes. Every refusal (signature, replay window, XML
declarations, malformed body, wrong appid) happens before anything changes. Each push takes effect once:
retries and concurrent duplicates get the first delivery's reply. A reply not ready within
`REPLY_DEADLINE` seconds is answered with an empty body and later sent as a customer-service message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from handlers.core import config_cache
from handlers.core.chat import ChatReply, ImageReply, Prefetched, TextReply, dialog_key
from handlers.core.errors import DomainError, ErrorCode
from handlers.notices import reach
from handlers.staff.merchants import SLUG, get_merchant
from handlers.wechat.client import oa_credentials
from models.merchant import Merchant
from webhooks.appkeys import BACKGROUND, DISPATCHER, REDIS, WECHAT
from webhooks.wechat import dedup
from webhooks.wechat.push import (
    Push,
    bad_message,
    check_timestamp,
    decrypt,
    encrypt_reply,
    mask,
    parse_push,
    render_reply,
    safe_xml,
    verify_signature,
)

log = logging.getLogger(__name__)

REPLY_DEADLINE = 4.0  # seconds; WeChat gives up after 5 s and retries


class MerchantCache:
    """Merchant rows by slug. The signature check needs the row before any round trip, so an entry is
    reused as it is; the push's dedup claim then reads the configuration version (`config_cache`) and a
    row loaded under another version is reloaded before the push is handled. A signature that fails
    against a cached row is checked again against a fresh one when the version moved."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[int | None, float, Merchant]] = {}  # slug -> (version, loaded at, row)

    async def get(self, slug: str) -> Merchant:
        hit = self._rows.get(slug)
        if hit is not None and time.monotonic() - hit[1] < config_cache.MAX_AGE:
            return hit[2]
        return await self._load(slug, None)

    async def at(self, slug: str, version: int) -> Merchant:
        """The row as of configuration `version` (the one this request observed)."""
        hit = self._rows.get(slug)
        if hit is not None and hit[0] == version:
            return hit[2]
        return await self._load(slug, version)

    async def refreshed(self, slug: str, redis: Redis) -> Merchant | None:
        """A fresh row if the configuration changed since the cached one was loaded, else None."""
        hit = self._rows.get(slug)
        version = int(await redis.get(config_cache.KEY) or 0)
        if hit is not None and hit[0] == version:
            return None
        return await self._load(slug, version)

    async def _load(self, slug: str, version: int | None) -> Merchant:
        if not SLUG.match(slug):
            raise DomainError(f"商户 {slug[:64]!r} 不存在", code=ErrorCode.MERCHANT_NOT_FOUND)
        merchant = await get_merchant(slug)
        self._rows[slug] = (version, time.monotonic(), merchant)
        return merchant


MERCHANTS: web.AppKey[MerchantCache] = web.AppKey("wechat_merchants", MerchantCache)
ANSWERS: web.AppKey[dedup.AnswerBook] = web.AppKey("wechat_answers", dedup.AnswerBook)


def setup(app: web.Application) -> None:
    app[MERCHANTS] = MerchantCache()
    app[ANSWERS] = dedup.AnswerBook()
    app.router.add_routes(
        [web.get("/wechat/{merchant_slug}", verify_url), web.post("/wechat/{merchant_slug}", receive_push)]
    )


async def verify_url(request: web.Request) -> web.Response:
    """WeChat's server URL check: echo `echostr` when the signature is ours."""
    merchant = await request.app[MERCHANTS].get(request.match_info["merchant_slug"])
    query = request.query
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    verify_signature(query.get("signature", ""), merchant.oa_token, timestamp, nonce)
    check_timestamp(timestamp)
    return web.Response(text=query.get("echostr", ""), content_type="text/plain")


async def receive_push(request: web.Request) -> web.Response:
    started = time.monotonic()
    slug = request.match_info["merchant_slug"]
    merchants = request.app[MERCHANTS]
    merchant = await merchants.get(slug)
    query = request.query
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    mode = query.get("encrypt_type", "raw").lower()
    if mode not in ("raw", "aes"):
        raise bad_message(f"未知的 encrypt_type：{mode[:16]!r}")
    try:
        xml = await _verified(request, merchant, mode, timestamp, nonce)
    except DomainError as exc:  # perhaps signed with credentials changed since the row was cached
        fresh = (
            await merchants.refreshed(slug, request.app[REDIS])
            if exc.code == ErrorCode.BAD_SIGNATURE
            else None
        )
        if fresh is None:
            raise
        merchant = fresh
        xml = await _verified(request, merchant, mode, timestamp, nonce)
    push = parse_push(xml)
    signature = query.get("signature", "").lower() if mode == "raw" else ""  # plaintext: bind URL to body

    async def recheck(fresh: Merchant) -> None:  # the configuration changed since `merchant` was cached
        await _verified(request, fresh, mode, timestamp, nonce)

    merchant, reply = await _answer(
        request.app, merchant, push, until=started + REPLY_DEADLINE, signature=signature, recheck=recheck
    )
    body = render_reply(reply, openid=push.message.openid, account=push.account)
    if body and mode == "aes":
        body = encrypt_reply(
            body, token=merchant.oa_token, aes_key=merchant.oa_aes_key, appid=merchant.oa_appid, nonce=nonce
        )
    return web.Response(text=body, content_type="application/xml" if body else "text/plain")


async def _verified(request: web.Request, merchant: Merchant, mode: str, timestamp: str, nonce: str) -> str:
    """The push's XML once its signature (and, in safe mode, its envelope) checks out."""
    if mode == "aes":
        return await _decrypted(request, merchant, timestamp, nonce)
    verify_signature(request.query.get("signature", ""), merchant.oa_token, timestamp, nonce)
    check_timestamp(timestamp)
    return _text(await request.read())


def _text(body: bytes) -> str:
    try:
        return body.decode()
    except UnicodeDecodeError as exc:
        raise bad_message("消息体不是 UTF-8 编码") from exc


async def _decrypted(request: web.Request, merchant: Merchant, timestamp: str, nonce: str) -> str:
    """Safe and compatible modes: check msg_signature over the ciphertext, then decrypt it."""
    envelope = safe_xml(_text(await request.read()))
    encrypted = envelope.get("Encrypt")
    if not encrypted:
        raise bad_message("加密消息缺少 <Encrypt> 节点")
    verify_signature(request.query.get("msg_signature", ""), merchant.oa_token, timestamp, nonce, encrypted)
    check_timestamp(timestamp)
    if not merchant.oa_aes_key:
        raise DomainError("该商户未配置安全模式（缺少 EncodingAESKey）", code=ErrorCode.FORBIDDEN)
    return decrypt(encrypted, merchant.oa_aes_key, merchant.oa_appid)


# Events a member causes (WeChat's system events — job reports, unfollowing — open no window).
USER_EVENTS = frozenset(
    {"subscribe", "scan", "click", "view", "location", "scancode_push", "scancode_waitmsg"}
)


def _window(merchant: Merchant, push: Push) -> str:
    """The member's customer-service window key, if this push is the member acting in the chat."""
    message = push.message
    if message.kind == "event" and message.event.lower() not in USER_EVENTS:
        return ""
    return reach.window_key(merchant.id, message.openid)


def _dialog(merchant: Merchant, push: Push) -> str:
    """The member's dialog key, read with the claim, for what the dispatcher may route by it."""
    message = push.message
    if message.kind == "text" or (message.kind == "event" and message.event.lower() == "click"):
        return dialog_key(merchant.id, message.openid)
    return ""


async def _answer(
    app: web.Application,
    merchant: Merchant,
    push: Push,
    *,
    until: float,
    signature: str = "",
    recheck: Callable[[Merchant], Awaitable[None]],
) -> tuple[Merchant, ChatReply | None]:
    """Dispatch a first delivery (bounded by `until`); repeat the first delivery's reply for a duplicate.
    The merchant row comes back as of the configuration version the claim read (`recheck`ed when it
    changed: credentials changed meanwhile refuse a push signed with the old ones)."""
    redis = app[REDIS]
    try:
        claimed = await dedup.claim_push(
            redis,
            merchant.id,
            push.dedup_key,
            signature=signature,
            window=_window(merchant, push),
            now=push.message.created_at.timestamp(),
            dialog=_dialog(merchant, push),
        )
    except dedup.SignatureReused:
        raise
    except Exception as exc:  # no dedup without Redis: let WeChat retry rather than risk double effects
        raise DomainError("服务暂时不可用，请稍后重试", code=ErrorCode.UNAVAILABLE) from exc
    answers = app[ANSWERS]
    # A first delivery opens its answer before anything else awaits, so a concurrent duplicate finds it.
    answer = answers.open(merchant.id, push.dedup_key) if claimed.first else None
    try:
        current = await app[MERCHANTS].at(merchant.slug, config_cache.observed() or 0)
        if current is not merchant:
            await recheck(current)
            merchant = current
    except BaseException:
        if answer is not None:
            answer.set_result(None)
        raise
    if answer is None:
        log.info("duplicate push", extra=_log_fields(merchant, push))
        return merchant, await answers.earlier_answer(merchant.id, push.dedup_key, until=until)
    background = app[BACKGROUND]
    task = background.spawn(_dispatch(app, merchant, push, claimed.dialog), name="wechat-dispatch")
    done, _ = await asyncio.wait({task}, timeout=max(0.0, until - time.monotonic()))
    if not done:
        answer.set_result(None)  # answered empty; the reply goes out later as a customer-service message
        background.spawn(_deliver_late(app, merchant, push, task), name="wechat-late-reply")
        log.info("reply deadline passed; answering later", extra=_log_fields(merchant, push))
        return merchant, None
    reply: ChatReply | None = task.result()
    answer.set_result(reply)
    return merchant, reply


async def _dispatch(
    app: web.Application, merchant: Merchant, push: Push, dialog: Prefetched | None
) -> ChatReply | None:
    try:
        return await app[DISPATCHER].dispatch(merchant, push.message, dialog)
    except Exception:
        log.exception("chat dispatch failed", extra=_log_fields(merchant, push))
        return None


async def _deliver_late(
    app: web.Application, merchant: Merchant, push: Push, task: asyncio.Task[ChatReply | None]
) -> None:
    """Send a reply that missed the deadline as a customer-service message (failures are logged only)."""
    reply = await task
    if reply is None:
        return
    openid, wechat = push.message.openid, app[WECHAT]
    try:
        credentials = oa_credentials(merchant)
        if isinstance(reply, TextReply):
            await wechat.send_custom_text(credentials, openid, reply.text)
        elif isinstance(reply, ImageReply):
            await wechat.send_custom_image(credentials, openid, reply.media_id)
        else:  # a customer-service news message carries exactly one article
            await wechat.send_custom_news(credentials, openid, reply.articles[:1])
    except Exception as exc:
        log.warning(
            "late reply not delivered: %s",
            type(exc).__name__,
            extra={**_log_fields(merchant, push), "error": str(exc)[:200]},
        )
    else:
        log.info("late reply delivered", extra=_log_fields(merchant, push))


def _log_fields(merchant: Merchant, push: Push) -> dict[str, Any]:
    message = push.message
    return {
        "merchant": merchant.slug,
        "openid": mask(message.openid),
        "kind": message.kind,
        "event": message.event,
    }
