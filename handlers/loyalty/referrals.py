"""Multi-level referral awards and the referrer ranking.

When the referee reaches the programme's trigger (its first completed purchase, or registration),
the chain of referrers above it is walked up to the configured depth: the level-1 referrer (the one
who brought the referee in) gets `level_points[0]`, its own referrer `level_points[1]`, and so on.

- At most once per referee and level: the `ReferralAward` unique key (referee, level) is inserted in
  the same transaction as the ledger credit (key `referral:<referee_id>:<level>`), so a repeated or
  concurrent call finds the row and awards nothing.
- Anonymised referrers get nothing, but their level is still counted and the walk goes on above
  them: levels measure distance from the referee, so erasing one member neither promotes its upline
  to better-paid levels nor cuts the upline out.
- The walk stops at a missing referrer, at a referrer of another merchant, or at a member already
  visited (registration cannot make cycles; the guard is belt and braces).
- A level worth 0 points still records its award row (it counts in the ranking), without a posting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.errors import ErrorCode, NotFound
from handlers.core.tasks import Effects, Queued
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger
from handlers.members import blocking
from handlers.notices.delivery import queue_notice
from handlers.rules.expiry import expiry_date
from handlers.rules.program import Program, ReferralTrigger
from models.member import Member
from models.merchant import Merchant
from models.points import PointsKind
from models.referral import ReferralAward

MAX_RANKING = 100


@dataclass(frozen=True, slots=True)
class Award:
    referrer_id: int
    level: int
    points: int
    transaction_id: int | None  # None when the level is worth 0 points


@dataclass(frozen=True, slots=True)
class RankingEntry:
    member_id: int
    member_code: str
    name: str | None
    referrals: int  # level-1 awards in the window
    points: int  # points from referral awards of every level in the window


def ledger_key(referee_id: int, level: int) -> str:
    return f"referral:{referee_id}:{level}"


async def award(
    merchant: Merchant, referee_id: int, *, trigger: ReferralTrigger, now: datetime, effects: Effects
) -> list[Award]:
    """Award the referee's referrer chain for `trigger`; [] when it is not the programme's trigger."""
    program = await loyalty_config.program(merchant.id)
    if program.referral.trigger != trigger or not program.referral.level_points:
        return []
    referee = await Member.get_or_none(id=referee_id, merchant_id=merchant.id)
    if referee is None:
        raise NotFound("会员不存在", code=ErrorCode.MEMBER_NOT_FOUND, field="referee_id")
    awards: list[Award] = []
    for level, referrer in await _chain(merchant.id, referee, len(program.referral.level_points)):
        if referrer.anonymized_at is not None or blocking.is_blocked(referrer):
            continue
        given = await _award_level(merchant, program, referee.id, referrer, level, now, effects)
        if given is not None:
            awards.append(given)
    return awards


async def _chain(merchant_id: int, referee: Member, depth: int) -> list[tuple[int, Member]]:
    """(level, referrer) pairs from level 1 up to `depth`, stopping at a gap, a stranger or a cycle."""
    chain: list[tuple[int, Member]] = []
    visited = {referee.id}
    current = referee
    for level in range(1, depth + 1):
        upline_id = current.referrer_id
        if upline_id is None or upline_id in visited:
            break
        upline = await Member.get_or_none(id=upline_id, merchant_id=merchant_id)
        if upline is None:
            break
        visited.add(upline.id)
        chain.append((level, upline))
        current = upline
    return chain


async def _award_level(
    merchant: Merchant,
    program: Program,
    referee_id: int,
    referrer: Member,
    level: int,
    now: datetime,
    effects: Effects,
) -> Award | None:
    amount = program.referral.level_points[level - 1]
    told: Queued | None = None
    try:
        async with in_transaction():
            await ReferralAward.create(
                merchant_id=merchant.id,
                referee_id=referee_id,
                referrer_id=referrer.id,
                level=level,
                points=amount,
            )
            if amount == 0:
                return Award(referrer.id, level, 0, None)
            posted = await ledger.credit(
                merchant.id,
                referrer.id,
                amount,
                PointsKind.EARN_REFERRAL,
                key=ledger_key(referee_id, level),
                now=now,
                expires_at=expiry_date(now, program.expiry, merchant.timezone),
                reference=f"referee:{referee_id}",
                reason=f"{level} 级推荐奖励",
            )
            told = await queue_notice(
                effects,
                "points_credited",
                merchant_id=merchant.id,
                member_id=referrer.id,
                event_key=ledger_key(referee_id, level),
                context={"reason": "推荐好友奖励", "points": amount, "balance": posted.balance_after},
            )
    except IntegrityError:
        return None  # already awarded for this referee and level (maybe by a concurrent call)
    if told is not None:
        await effects.after_commit(told)
    return Award(referrer.id, level, amount, posted.transaction_id)


@dataclass(frozen=True, slots=True)
class ReferrerStats:
    invited: int  # members this member brought in (whose referrer it is)
    rewarded: int  # of them, those whose level-1 award was given (they reached the programme's trigger)
    points: int  # points from this member's referral awards of every level


async def referrer_stats(merchant_id: int, member_id: int) -> ReferrerStats:
    """What a member's invitations brought: people, rewarded referrals and points (the invite page)."""
    invited = await Member.filter(merchant_id=merchant_id, referrer_id=member_id).count()
    awards = ReferralAward.filter(merchant_id=merchant_id, referrer_id=member_id)
    rewarded = await awards.filter(level=1).count()
    return ReferrerStats(invited=invited, rewarded=rewarded, points=await queries.sum_of(awards, "points"))


# Ranked first, then each referrer looked up in that order until `limit` are found (an erased referrer,
# or one of another store, is skipped): no join of every referrer of the window.
_RANKING_SQL = """
SELECT m.id, m.code, m.name, x.referrals, x.points
  FROM (SELECT referrer_id, count(*) FILTER (WHERE level = 1) AS referrals,
               COALESCE(sum(points), 0)::bigint AS points
          FROM referral_award
         WHERE merchant_id = :merchant AND created_at >= :since AND created_at < :until
         GROUP BY referrer_id
         ORDER BY referrals DESC, points DESC, referrer_id) x
 CROSS JOIN LATERAL (
       SELECT p.id, p.code, p.name FROM member p
        WHERE p.id = x.referrer_id AND p.merchant_id = :merchant AND p.anonymized_at IS NULL
          AND (CAST(:store AS integer) IS NULL OR p.store_id = :store)) m
 ORDER BY x.referrals DESC, x.points DESC, x.referrer_id
 LIMIT :limit
"""


async def ranking(
    merchant_id: int,
    *,
    since: datetime,
    until: datetime,
    limit: int = 20,
    store_id: int | None = None,
    replica: bool = False,
) -> list[RankingEntry]:
    """Referrers by level-1 referrals awarded in [since, until), then by referral points earned (anonymised
    referrers left out); `store_id`: referrers acquired by that store only; `replica`: read the read
    connection (DATABASE_READ_URL), as the analyses do."""
    fetch = queries.fetch_read if replica else queries.fetch_rows
    rows = await fetch(
        _RANKING_SQL,
        merchant=merchant_id,
        since=since,
        until=until,
        store=store_id,
        limit=max(1, min(limit, MAX_RANKING)),
    )
    return [
        RankingEntry(int(r["id"]), r["code"], r["name"], int(r["referrals"]), int(r["points"])) for r in rows
    ]
