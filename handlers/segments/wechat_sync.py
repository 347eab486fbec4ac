"""Syncing a segment to a WeChat user tag of the merchant's Official Account (用户标签), off the request.

`request_sync` marks the segment `queued` and queues a durable task (`handlers.core.tasks`), so the sync
survives a crash and is retried with backoff; the task (`run_sync`, in the worker or the embedded runner)
does the WeChat calls:

1. the segment's WeChat tag: the one it was synced to, or a new one named after it (`tags/create`).
   Before creating, `tags/get` is read: an account holding WeChat's maximum of 100 tags fails the sync
   with a clear message (and so does WeChat's own 45056); a tag of the same name that exists already
   (45157) is adopted rather than duplicated;
2. the audience: the segment's members who follow the account now (openid set), in keyset batches;
3. the tag's current followers (`user/tag/get`, 10,000 a page);
4. untag those no longer in the audience and tag the new ones, at most 50 openids per call
   (`members/batchtagging` / `batchuntagging`). A batch refused because one follower left meanwhile
   (40003, 43004) or already holds 20 tags (45059) is retried follower by follower, skipping those.

The outcome is on the segment: `sync_status` done (with `synced_count`, `synced_at`) or failed (with
`sync_error`, in Chinese). Deleting a synced segment deletes its WeChat tag the same way (`run_drop`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries
from handlers.core.errors import Conflict
from handlers.core.tasks import Effects, Handler
from handlers.segments import audience, catalogue
from handlers.wechat.client import TAG_BATCH_MAX, TAG_NAME_MAX, AppCredentials, WeChatClient, oa_credentials
from handlers.wechat.errors import (
    InvalidOpenid,
    InvalidTag,
    RequireSubscribe,
    TagNameExists,
    TooManyTags,
    UserHasTooManyTags,
    WeChatError,
)
from models.merchant import Merchant
from models.tag import Segment

log = logging.getLogger(__name__)
SEGMENT_SYNC = "segment.wechat_sync"
SEGMENT_DROP = "segment.wechat_drop"
WECHAT_TAG_LIMIT = 100
AUDIENCE_BATCH = 5000
_OPENIDS = (
    "SELECT openid FROM member WHERE id = ANY(CAST(:ids AS integer[])) AND openid IS NOT NULL AND subscribed"
)


async def request_sync(
    merchant: Merchant, segment_id: int, *, actor: str, now: datetime, effects: Effects
) -> Segment:
    """Queue the segment's sync to its WeChat tag (role admin; the merchant needs an Official Account)."""
    if not (merchant.oa_appid and merchant.oa_secret):
        raise Conflict("商户未配置公众号 oa_appid，无法同步微信标签", field="oa_appid")
    async with in_transaction():
        segment = await catalogue.get_segment(merchant.id, segment_id, lock=True)
        segment.sync_status, segment.sync_error = "queued", ""
        await segment.save(update_fields=["sync_status", "sync_error", "updated_at"])
        queued = await effects.queue(
            SEGMENT_SYNC,
            f"{segment.id}:{now.isoformat()}",
            {"merchant_id": merchant.id, "segment_id": segment.id},
            merchant_id=merchant.id,
        )
        await audit_log.record(merchant.id, actor, "segment.sync", f"segment:{segment.id}", name=segment.name)
    await effects.after_commit(queued)
    return segment


async def delete_segment(merchant: Merchant, segment_id: int, *, actor: str, effects: Effects) -> None:
    """Delete the segment; a synced one's WeChat tag is deleted after commit, by a durable task."""
    queued = None
    async with in_transaction():
        segment = await catalogue.delete_segment(merchant.id, segment_id, actor=actor)
        if segment.wechat_tag_id is not None and merchant.oa_appid:
            queued = await effects.queue(
                SEGMENT_DROP,
                f"{merchant.id}:{segment.wechat_tag_id}:{segment.id}",
                {"merchant_id": merchant.id, "wechat_tag_id": segment.wechat_tag_id},
                merchant_id=merchant.id,
            )
    if queued is not None:
        await effects.after_commit(queued)


async def _mark(segment_id: int, **fields: Any) -> None:
    await Segment.filter(id=segment_id).update(**fields)


def _tag_name(segment: Segment) -> str:
    return segment.name[:TAG_NAME_MAX]


async def _wechat_tag(client: WeChatClient, app: AppCredentials, segment: Segment) -> int:
    """The segment's WeChat tag id: the synced one if WeChat still has it, else a new (or same-named) one."""
    existing = await client.list_tags(app)
    if segment.wechat_tag_id is not None and any(t.id == segment.wechat_tag_id for t in existing):
        return segment.wechat_tag_id
    name = _tag_name(segment)
    same = next((t for t in existing if t.name == name), None)
    if same is not None:
        return same.id
    if len(existing) >= WECHAT_TAG_LIMIT:
        raise TooManyTags(45056, "checked before tags/create")
    try:
        return await client.create_tag(app, name)
    except TagNameExists:  # created meanwhile (a retried run): adopt it
        again = next((t for t in await client.list_tags(app) if t.name == name), None)
        if again is None:
            raise
        return again.id


async def _current(client: WeChatClient, app: AppCredentials, tag_id: int) -> set[str]:
    found: set[str] = set()
    after = ""
    while True:
        page, after = await client.tag_followers(app, tag_id, after)
        found.update(page)
        if not after or not page:
            return found


async def _audience(merchant_id: int, expression: dict[str, Any]) -> set[str]:
    openids: set[str] = set()
    async for ids in audience.iter_member_ids(merchant_id, expression, batch=AUDIENCE_BATCH):
        rows = await queries.fetch_rows(_OPENIDS, ids=ids)
        openids.update(str(row["openid"]) for row in rows)
    return openids


async def _apply(
    client: WeChatClient, app: AppCredentials, tag_id: int, openids: list[str], *, tag: bool
) -> int:
    """Tag or untag `openids`, 50 a call; the number done (followers refused one by one are skipped)."""
    done = 0
    for start in range(0, len(openids), TAG_BATCH_MAX):
        batch = openids[start : start + TAG_BATCH_MAX]
        try:
            await client.tag_users(app, tag_id, batch, tag=tag)
            done += len(batch)
        except (InvalidOpenid, RequireSubscribe, UserHasTooManyTags):
            for openid in batch:
                try:
                    await client.tag_users(app, tag_id, [openid], tag=tag)
                    done += 1
                except (InvalidOpenid, RequireSubscribe, UserHasTooManyTags) as exc:
                    log.info("segment sync skipped a follower", extra=exc.log_fields())
    return done


async def run_sync(
    client: WeChatClient, merchant_id: int, segment_id: int, now: datetime
) -> dict[str, int] | None:
    merchant = await Merchant.get_or_none(id=merchant_id)
    segment = await Segment.get_or_none(id=segment_id, merchant_id=merchant_id)
    if merchant is None or segment is None:
        return None  # deleted meanwhile
    await _mark(segment.id, sync_status="running")
    app = oa_credentials(merchant)
    try:
        tag_id = await _wechat_tag(client, app, segment)
        if tag_id != segment.wechat_tag_id:
            await _mark(segment.id, wechat_tag_id=tag_id)
        wanted = await _audience(merchant_id, segment.expression)
        present = await _current(client, app, tag_id)
        removed = await _apply(client, app, tag_id, sorted(present - wanted), tag=False)
        added = await _apply(client, app, tag_id, sorted(wanted - present), tag=True)
    except (TooManyTags, InvalidTag) as exc:  # retrying cannot help: the merchant must act
        await _mark(segment.id, sync_status="failed", sync_error=exc.message)
        log.warning("segment sync failed", extra={"segment": segment.id, **exc.log_fields()})
        return {"failed": 1}
    except WeChatError as exc:
        await _mark(segment.id, sync_status="failed", sync_error=exc.message)
        raise  # retried by the task queue with backoff
    synced = len(present) - removed + added
    await _mark(segment.id, sync_status="done", sync_error="", synced_at=now, synced_count=synced)
    return {"added": added, "removed": removed, "tagged": synced}


async def run_drop(client: WeChatClient, merchant_id: int, wechat_tag_id: int) -> None:
    merchant = await Merchant.get_or_none(id=merchant_id)
    if merchant is None or not merchant.oa_appid:
        return
    try:
        await client.delete_tag(oa_credentials(merchant), wechat_tag_id)
    except InvalidTag:
        return  # gone already


def handlers(client: WeChatClient | None) -> dict[str, Handler]:
    """The task handlers of a process with (or, e.g. a CLI, without) a WeChat client."""

    def needs_client() -> WeChatClient:
        if client is None:
            raise RuntimeError("this process has no WeChat client; a worker or the server syncs tags")
        return client

    async def sync(effects: Effects, payload: Mapping[str, Any], now: datetime) -> dict[str, int] | None:
        return await run_sync(needs_client(), int(payload["merchant_id"]), int(payload["segment_id"]), now)

    async def drop(effects: Effects, payload: Mapping[str, Any], now: datetime) -> None:
        await run_drop(needs_client(), int(payload["merchant_id"]), int(payload["wechat_tag_id"]))

    return {SEGMENT_SYNC: sync, SEGMENT_DROP: drop}
