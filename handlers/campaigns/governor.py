"""The send governor's claim: a batch of pending recipients becomes `sending` (its budget taken, the
attempt recorded before any call) or `skipped` with the reason — in ONE transaction.

The members are advisory-locked in id order, so two campaigns claiming the same member serialize and
the caps hold across campaigns and workers: the touches (campaign messages claimed today / this month,
from `campaign_recipient` itself) are read under the lock and the new claims written before it is
released. A subscribe message takes its grant here too (`used < accepted`, never below zero), and the
48-hour window is read from Redis (`handlers.notices.reach`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.notices import reach
from handlers.rules import campaigns as rules
from handlers.rules.campaigns import Caps, Contact, Touches
from models.campaign import Campaign, MarketingCaps

LOCK_NAMESPACE = 0x6D6B74  # pg_advisory_xact_lock(namespace, member_id): one member's marketing budget


@dataclass(frozen=True, slots=True)
class Claimed:
    """A recipient this run may send to."""

    recipient_id: int
    member_id: int
    attempts: int  # including this one
    openid: str | None
    mp_openid: str | None
    phone: str | None
    name: str | None
    code: str
    points: int
    resumed: bool = False  # `sending` before this run: in flight at a crash, or waiting for a retry
    retry: bool = False  # resumed after an answer that said "try again" (not taken)


_MEMBER_COLUMNS = """
r.id AS recipient_id, r.member_id, r.attempts, r.reason, m.openid, m.subscribed, m.mp_openid, m.phone,
m.sms_consent, m.name, m.code, m.anonymized_at, m.blocked_at, COALESCE(a.balance, 0) AS points
"""
_PENDING_SQL = f"""
SELECT {_MEMBER_COLUMNS}
  FROM campaign_recipient r
  JOIN member m ON m.id = r.member_id
  LEFT JOIN points_account a ON a.member_id = r.member_id
 WHERE r.campaign_id = :campaign AND r.member_id BETWEEN :lo AND :hi AND r.status = 'pending'
 ORDER BY r.member_id
 LIMIT :limit
   FOR UPDATE OF r SKIP LOCKED
"""  # noqa: S608 - a constant column list
_SENDING_SQL = f"""
SELECT {_MEMBER_COLUMNS}
  FROM campaign_recipient r
  JOIN member m ON m.id = r.member_id
  LEFT JOIN points_account a ON a.member_id = r.member_id
 WHERE r.campaign_id = :campaign AND r.member_id BETWEEN :lo AND :hi AND r.status = 'sending'
 ORDER BY r.member_id
 LIMIT :limit
"""  # noqa: S608 - a constant column list
_LOCK_SQL = """
SELECT count(pg_advisory_xact_lock(:namespace, member_id)) AS n
  FROM (SELECT unnest(:members::int[]) AS member_id ORDER BY 1) AS ordered
"""
_TOUCHES_SQL = """
SELECT r.member_id,
       count(*) FILTER (WHERE r.claimed_at >= :day) AS today,
       count(*) FILTER (WHERE r.channel = 'mass') AS mass_month,
       count(*) FILTER (WHERE r.channel = 'sms' AND r.claimed_at >= :day) AS sms_today
  FROM campaign_recipient r
 WHERE r.member_id = ANY(:members::int[]) AND r.merchant_id = :merchant AND r.claimed_at >= :month
   AND r.status IN ('sending', 'sent')
 GROUP BY r.member_id
"""
_GRANTS_SQL = """
SELECT member_id, accepted - used AS unused FROM subscribe_grant
 WHERE member_id = ANY(:members::int[]) AND template_id = :template
"""
_TAKE_GRANTS_SQL = """
UPDATE subscribe_grant SET used = used + 1, updated_at = :now
 WHERE member_id = ANY(:members::int[]) AND template_id = :template AND used < accepted
RETURNING member_id
"""
_CLAIM_SQL = """
UPDATE campaign_recipient r
   SET status = v.status, reason = v.reason,
       attempts = r.attempts + CASE WHEN v.status = 'sending' THEN 1 ELSE 0 END,
       claimed_at = CASE WHEN v.status = 'sending' THEN :now::timestamptz END, updated_at = :now
  FROM unnest(:ids::bigint[], :statuses::text[], :reasons::text[]) AS v(id, status, reason)
 WHERE r.id = v.id
"""
_RESUME_SQL = """
UPDATE campaign_recipient SET attempts = attempts + 1, reason = '', updated_at = :now
 WHERE id = ANY(:ids::bigint[]) AND status = 'sending'
"""


async def caps_of(merchant_id: int) -> Caps:
    row = await MarketingCaps.get_or_none(merchant_id=merchant_id)
    return (
        Caps() if row is None else Caps(marketing_per_day=row.marketing_per_day, sms_per_day=row.sms_per_day)
    )


def _claimed(row: dict[str, Any], *, resumed: bool = False) -> Claimed:
    return Claimed(
        recipient_id=int(row["recipient_id"]),
        member_id=int(row["member_id"]),
        attempts=int(row["attempts"]) + 1,
        openid=row["openid"] if row["subscribed"] else None,
        mp_openid=row["mp_openid"],
        phone=row["phone"],
        name=row["name"],
        code=row["code"],
        points=int(row["points"]),
        resumed=resumed,
        retry=resumed and row["reason"] == "retry",
    )


async def resumed(campaign: Campaign, lo: int, hi: int, now: datetime, limit: int) -> list[Claimed]:
    """The range's recipients already `sending` (their budget was taken when first claimed): this try
    is recorded before any call."""
    rows = await queries.fetch_rows(_SENDING_SQL, campaign=campaign.id, lo=lo, hi=hi, limit=limit)
    if rows:
        await queries.fetch_rows(_RESUME_SQL, ids=[int(r["recipient_id"]) for r in rows], now=now)
    return [_claimed(row, resumed=True) for row in rows]


@dataclass(frozen=True, slots=True)
class Claim:
    go: list[Claimed]
    skipped: dict[str, int]  # reason → how many


async def claim(
    campaign: Campaign,
    redis: Redis,
    *,
    lo: int,
    hi: int,
    limit: int,
    now: datetime,
    tz: str,
    caps: Caps,
) -> Claim | None:
    """Claim up to `limit` pending recipients of the member range [lo, hi]; None when none is left."""
    channel: rules.Channel = campaign.channel.value
    async with in_transaction():
        rows = await queries.fetch_rows(_PENDING_SQL, campaign=campaign.id, lo=lo, hi=hi, limit=limit)
        if not rows:
            return None
        members = [int(row["member_id"]) for row in rows]
        await queries.fetch_rows(_LOCK_SQL, namespace=LOCK_NAMESPACE, members=members)
        touches = await _touches(campaign.merchant_id, members, now, tz)
        grants = await _grants(members, campaign.template_id) if channel == "subscribe" else {}
        windows = await _windows(redis, campaign.merchant_id, rows) if channel == "custom" else {}
        decided: dict[int, str] = {}  # recipient id → reason ('' to go)
        for row in rows:
            decided[int(row["recipient_id"])] = _decide(
                channel, campaign, row, touches, grants, windows, caps, now
            )
        if channel == "subscribe":
            await _take_grants(campaign.template_id, rows, decided, now)
        ids = list(decided)
        await queries.fetch_rows(
            _CLAIM_SQL,
            ids=ids,
            statuses=["skipped" if decided[i] else "sending" for i in ids],
            reasons=[decided[i] for i in ids],
            now=now,
        )
    go = [_claimed(row) for row in rows if not decided[int(row["recipient_id"])]]
    skipped: dict[str, int] = {}
    for reason in decided.values():
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
    return Claim(go, skipped)


def _decide(
    channel: rules.Channel,
    campaign: Campaign,
    row: dict[str, Any],
    touches: dict[int, Touches],
    grants: dict[int, int],
    windows: dict[int, tuple[datetime | None, int]],
    caps: Caps,
    now: datetime,
) -> str:
    if row["anonymized_at"] is not None:
        return "member_erased"
    if row["blocked_at"] is not None:
        return "member_blocked"
    member_id = int(row["member_id"])
    opened, sent = windows.get(member_id, (None, 0))
    contact = Contact(
        oa_openid=row["openid"] if row["subscribed"] else None,
        mp_openid=row["mp_openid"],
        phone=row["phone"],
        sms_consent=bool(row["sms_consent"]),
        subscribe_grants=grants.get(member_id, 0),
        window_opened_at=opened,
        window_sent=sent,
    )
    reason = rules.reach_refusal(channel, contact, campaign.template_id, now)
    if reason is None:
        reason = rules.budget_refusal(channel, touches.get(member_id, Touches()), caps)
    if reason is None:  # one claimed message counts against the next member row of the same batch too
        seen = touches.get(member_id, Touches())
        touches[member_id] = Touches(
            seen.marketing_today + 1,
            seen.mass_this_month + (channel == "mass"),
            seen.sms_today + (channel == "sms"),
        )
    return reason or ""


async def _touches(merchant_id: int, members: Sequence[int], now: datetime, tz: str) -> dict[int, Touches]:
    rows = await queries.fetch_rows(
        _TOUCHES_SQL,
        members=list(members),
        merchant=merchant_id,
        day=rules.local_day_start(now, tz),
        month=rules.local_month_start(now, tz),
    )
    return {
        int(row["member_id"]): Touches(int(row["today"]), int(row["mass_month"]), int(row["sms_today"]))
        for row in rows
    }


async def _grants(members: Sequence[int], template_id: str) -> dict[int, int]:
    rows = await queries.fetch_rows(_GRANTS_SQL, members=list(members), template=template_id)
    return {int(row["member_id"]): int(row["unused"]) for row in rows}


async def _windows(
    redis: Redis, merchant_id: int, rows: Sequence[dict[str, Any]]
) -> dict[int, tuple[datetime | None, int]]:
    """The 48-hour windows of a chunk's followers, in one Redis round trip (`reach.window`'s reading)."""
    followers = [
        (int(row["member_id"]), row["openid"]) for row in rows if row["openid"] and row["subscribed"]
    ]
    if not followers:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for _, openid in followers:
            pipe.hgetall(reach.window_key(merchant_id, openid))
        found = await pipe.execute()
    windows: dict[int, tuple[datetime | None, int]] = {}
    for (member_id, _), window in zip(followers, found, strict=True):
        if window:
            opened = datetime.fromtimestamp(int(window.get(b"opened", b"0")), UTC)
            windows[member_id] = (opened, int(window.get(b"sent", b"0")))
    return windows


async def _take_grants(
    template_id: str, rows: Sequence[dict[str, Any]], decided: dict[int, str], now: datetime
) -> None:
    """Take one grant per subscribe recipient that goes; one a concurrent send took meanwhile: skipped."""
    going = {
        int(row["member_id"]): int(row["recipient_id"])
        for row in rows
        if not decided[int(row["recipient_id"])]
    }
    if not going:
        return
    taken = await queries.fetch_rows(_TAKE_GRANTS_SQL, members=list(going), template=template_id, now=now)
    took = {int(row["member_id"]) for row in taken}
    for member_id, recipient_id in going.items():
        if member_id not in took:
            decided[recipient_id] = "no_subscribe_grant"
