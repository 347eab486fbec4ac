"""What decides whether a channel can reach a member: the 48-hour customer-service window (in Redis)
and the mini-program subscribe grants (in PostgreSQL, one grant one send)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from redis.asyncio import Redis

from handlers.core import queries
from handlers.rules.notices import CUSTOM_WINDOW
from models.member import Member
from models.notice import SubscribeGrant

MAX_TEMPLATE_IDS = 20


def window_key(merchant_id: int, openid: str) -> str:
    """Opened by the WeChat callback's dedup claim (`webhooks.wechat.dedup`) in the same round trip."""
    return f"wx:window:{merchant_id}:{openid}"


async def window_opened(redis: Redis, merchant_id: int, openid: str, now: datetime) -> None:
    """The member messaged or acted in the chat: a new 48-hour window with its full quota (what the
    callback's claim does; for tests and other doors)."""
    key = window_key(merchant_id, openid)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={"opened": int(now.timestamp()), "sent": 0})
        pipe.expire(key, int(CUSTOM_WINDOW.total_seconds()))
        await pipe.execute()


async def window(redis: Redis, merchant_id: int, openid: str) -> tuple[datetime | None, int]:
    """(when the member's current window opened, messages sent in it); (None, 0) outside any."""
    found = await redis.hgetall(window_key(merchant_id, openid))  # type: ignore[misc]
    if not found:
        return None, 0
    opened = int(found.get(b"opened", b"0"))
    return datetime.fromtimestamp(opened, UTC), int(found.get(b"sent", b"0"))


async def window_used(redis: Redis, merchant_id: int, openid: str) -> None:
    await redis.hincrby(window_key(merchant_id, openid), "sent", 1)  # type: ignore[misc]


async def record_grants(member: Member, accepted: Iterable[str], rejected: Iterable[str]) -> dict[str, int]:
    """The mini-program reports what the member chose in `wx.requestSubscribeMessage`: each accept adds
    one grant; a reject adds none (grants given before stay). Returns the unused grants per template."""
    chosen = list(dict.fromkeys(accepted))
    for template_id in chosen:
        await queries.fetch_rows(
            """
            INSERT INTO subscribe_grant (merchant_id, member_id, template_id, accepted, used, updated_at)
            VALUES (:merchant, :member, :template, 1, 0, :now)
            ON CONFLICT (member_id, template_id)
            DO UPDATE SET accepted = subscribe_grant.accepted + 1, updated_at = EXCLUDED.updated_at
            """,
            merchant=member.merchant_id,
            member=member.id,
            template=template_id,
            now=datetime.now(UTC),
        )
    names = set(chosen) | set(rejected)
    rows = await SubscribeGrant.filter(member_id=member.id, template_id__in=list(names))
    return {row.template_id: row.accepted - row.used for row in rows}


async def unused_grants(member_id: int, template_id: str) -> int:
    row = await SubscribeGrant.get_or_none(member_id=member_id, template_id=template_id)
    return 0 if row is None else row.accepted - row.used


async def use_grant(member_id: int, template_id: str) -> bool:
    """Take one grant for a send (never below zero, even under concurrent sends)."""
    rows = await queries.fetch_rows(
        "UPDATE subscribe_grant SET used = used + 1, updated_at = :now"
        " WHERE member_id = :member AND template_id = :template AND used < accepted RETURNING id",
        member=member_id,
        template=template_id,
        now=datetime.now(UTC),
    )
    return bool(rows)


async def no_grants_left(member_id: int, template_id: str) -> None:
    """WeChat answered 43101: it knows of no grant, so none of ours is left either."""
    await queries.fetch_rows(
        "UPDATE subscribe_grant SET used = accepted, updated_at = :now WHERE member_id = :member"
        " AND template_id = :template",
        member=member_id,
        template=template_id,
        now=datetime.now(UTC),
    )
