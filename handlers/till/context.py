"""What a till purchase is priced against: ONE read of the member's context before anything is locked.

The member (all columns; a member of another merchant, or none, reads as NULLs), their stored tier,
the store (the cashier's, else the merchant's first open one), a purchase already recorded under the key, the
period totals the earn rules may use, the current rule-set and tier-ladder versions, the campaign
pool, and — only when the purchase needs them — the points account and its spendable lots (a points
offset), the stored-value account, or the credit account (limit and owed: a purchase on credit).
`handlers.till.purchase` computes from it and hands its assumptions to `memberbot_till_purchase`,
which re-checks them under the lock (migrations 0017, 0019).

This is the one place that reads the member for a purchase: a check on the member that refuses a
purchase (an erased member, and whatever else may bar one) belongs in `member_refusal`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handlers.core import queries
from handlers.core.errors import DomainError, ErrorCode, NotFound
from handlers.members import blocking
from handlers.rules import calendar
from handlers.rules.expiry import Lot
from models.member import Member
from models.merchant import Merchant
from models.staff import Staff

_CONTEXT_SQL = """
SELECT m.*,
  (SELECT tier_code FROM member_tier WHERE member_id = :member) AS ctx_tier_code,
  s.id AS ctx_store_id, s.code AS ctx_store_code,
  e.id AS ctx_existing_id, e.request_digest AS ctx_existing_digest, e.result AS ctx_existing_result,
  (SELECT COALESCE(SUM(x.paid_fen) FILTER (WHERE x.created_at >= :year_start), 0)
     FROM purchase x WHERE x.merchant_id = :merchant AND x.member_id = :member AND x.status = 'completed'
      AND x.created_at >= LEAST(:year_start, :day_start)) AS ctx_period_spend,
  (SELECT COALESCE(SUM(x.points_earned), 0)
     FROM purchase x WHERE x.merchant_id = :merchant AND x.member_id = :member AND x.status = 'completed'
      AND x.created_at >= :day_start) AS ctx_points_today,
  (SELECT max(version) FROM rule_set_version WHERE merchant_id = :merchant) AS ctx_rules_version,
  (SELECT max(version) FROM tier_set_version WHERE merchant_id = :merchant) AS ctx_tiers_version,
  (SELECT budget - granted FROM points_pool WHERE merchant_id = :merchant AND code = :pool)
    AS ctx_pool_remaining,
  CASE WHEN :offset THEN (SELECT balance FROM points_account WHERE member_id = :member) END AS ctx_balance,
  CASE WHEN :offset THEN (SELECT updated_at FROM points_account WHERE member_id = :member) END
    AS ctx_account_updated_at,
  CASE WHEN :offset THEN (
    SELECT json_agg(json_build_array(l.id, l.remaining, l.expires_at)) FROM points_lot l
     WHERE l.member_id = :member AND l.status = 'available' AND l.remaining > 0
       AND (l.expires_at IS NULL OR l.expires_at > :now)) END AS ctx_lots,
  CASE WHEN :wallet THEN (SELECT principal_fen FROM wallet_account WHERE member_id = :member) END
    AS ctx_principal,
  CASE WHEN :wallet THEN (SELECT bonus_fen FROM wallet_account WHERE member_id = :member) END AS ctx_bonus,
  CASE WHEN :credit THEN (SELECT limit_fen FROM credit_account WHERE member_id = :member) END
    AS ctx_credit_limit,
  CASE WHEN :credit THEN (SELECT balance_fen FROM credit_account WHERE member_id = :member) END
    AS ctx_credit_owed
FROM (SELECT 1 AS one) AS one
LEFT JOIN member m ON m.id = :member AND m.merchant_id = :merchant
LEFT JOIN store s ON s.id = COALESCE(
  :staff_store,
  (SELECT id FROM store WHERE merchant_id = :merchant AND closed_at IS NULL ORDER BY id LIMIT 1))
LEFT JOIN purchase e ON e.merchant_id = :merchant AND e.idempotency_key = :key
"""
# The slow path, after a purchase found its context moved: the locks taken before the read, in the
# order of every other path (points account, pool, coupon, stored-value account, credit account).
_LOCK_SQL = "SELECT id FROM memberbot_points_account(:merchant, :member)"
_LOCK_POOL_SQL = "SELECT id FROM points_pool WHERE merchant_id = :merchant AND code = :pool FOR UPDATE"
_LOCK_COUPON_SQL = "SELECT id FROM coupon WHERE merchant_id = :merchant AND code = :code FOR UPDATE"
_LOCK_WALLET_SQL = "SELECT id FROM memberbot_wallet_account(:merchant, :member)"
_LOCK_CREDIT_SQL = "SELECT id FROM memberbot_credit_account(:merchant, :member)"


@dataclass(frozen=True, slots=True)
class Existing:
    """A purchase already recorded under the key."""

    purchase_id: int
    digest: str
    result: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TillContext:
    member: Member | None
    stored_tier: str | None  # None: the member never changed tier (the ladder's base tier)
    store_id: int | None
    store_code: str | None
    existing: Existing | None
    period_spend_fen: int  # cash spend this calendar year, merchant-local
    points_today: int  # purchase points earned today, merchant-local
    year_start: datetime
    day_start: datetime
    rules_version: int | None
    tiers_version: int | None
    pool_remaining: int | None  # None: no such pool
    balance: int | None  # read with the lots, for a points offset
    account_updated_at: datetime | None
    lots: list[Lot]
    wallet: tuple[int, int] | None  # (principal, bonus), for a stored-value payment
    credit: tuple[int, int] | None = None  # (limit, owed), for a purchase put on credit


@dataclass(frozen=True, slots=True)
class Needs:
    """What the purchase asks for beyond the member: which parts of the context to read."""

    member_id: int
    key: str
    pool: str | None
    offset: bool
    wallet: bool
    coupon_code: str | None
    credit: bool = False


async def lock(merchant: Merchant, needs: Needs) -> None:
    """Take the purchase's locks in the caller's transaction (the slow path, before `read`)."""
    if not await queries.fetch_rows(_LOCK_SQL, merchant=merchant.id, member=needs.member_id):
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND)
    if needs.pool is not None:
        await queries.fetch_rows(_LOCK_POOL_SQL, merchant=merchant.id, pool=needs.pool)
    if needs.coupon_code:
        await queries.fetch_rows(_LOCK_COUPON_SQL, merchant=merchant.id, code=needs.coupon_code)
    if needs.wallet:
        await queries.fetch_rows(_LOCK_WALLET_SQL, merchant=merchant.id, member=needs.member_id)
    if needs.credit:
        await queries.fetch_rows(_LOCK_CREDIT_SQL, merchant=merchant.id, member=needs.member_id)


async def read(merchant: Merchant, staff: Staff | None, needs: Needs, now: datetime) -> TillContext:
    """The purchase's context, in one round trip (unlocked, unless the caller took `lock`)."""
    year_start = calendar.year_start(now, merchant.timezone)
    day_start = calendar.day_start(now, merchant.timezone)
    row = await queries.fetch_one(
        _CONTEXT_SQL,
        merchant=merchant.id,
        member=needs.member_id,
        key=needs.key,
        staff_store=staff.store_id if staff is not None else None,
        year_start=year_start,
        day_start=day_start,
        pool=needs.pool,
        offset=needs.offset,
        wallet=needs.wallet,
        credit=needs.credit,
        now=now,
    )
    existing = None
    if row["ctx_existing_id"] is not None:
        result = row["ctx_existing_result"]
        existing = Existing(
            int(row["ctx_existing_id"]),
            row["ctx_existing_digest"],
            json.loads(result) if isinstance(result, str) else result,
        )
    lots = json.loads(row["ctx_lots"]) if row["ctx_lots"] else []
    return TillContext(
        member=queries.as_model(Member, row) if row["id"] is not None else None,
        stored_tier=row["ctx_tier_code"],
        store_id=row["ctx_store_id"],
        store_code=row["ctx_store_code"],
        existing=existing,
        period_spend_fen=int(row["ctx_period_spend"]),
        points_today=int(row["ctx_points_today"]),
        year_start=year_start,
        day_start=day_start,
        rules_version=row["ctx_rules_version"],
        tiers_version=row["ctx_tiers_version"],
        pool_remaining=row["ctx_pool_remaining"],
        balance=row["ctx_balance"],
        account_updated_at=row["ctx_account_updated_at"],
        lots=[Lot(int(i), int(left), datetime.fromisoformat(at) if at else None) for i, left, at in lots],
        wallet=(int(row["ctx_principal"] or 0), int(row["ctx_bonus"] or 0)) if needs.wallet else None,
        credit=(int(row["ctx_credit_limit"] or 0), int(row["ctx_credit_owed"] or 0))
        if needs.credit
        else None,
    )


def member_refusal(member: Member | None) -> DomainError | None:
    """Why this member cannot buy at the till (None: they can). Every purchase passes here first."""
    if member is None or member.anonymized_at is not None:
        return NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND)
    if blocking.is_blocked(member):  # no offset, coupon, stored value or points for a blocked member
        return blocking.MemberBlocked()
    return None
