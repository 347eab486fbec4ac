"""A member's tier: where they stand, upgrades after activity or bought with points, reviews.

Criteria are read from a rolling window (spend paid in cash at the till, points earned net of
reversals, recharge — the principal of stored-value top-ups), never from the
current balance. Every change writes one append-only `TierChange` (unique idempotency key).
An upgrade gift is credited at most once per member and tier (`tiergift:<member>:<tier>`), so a
member who drops and climbs back does not collect it twice. An upgrade queues the `tier.upgraded`
effect in its transaction (the tier's gift coupons, `handlers.effects`), run right after commit.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.core import queries
from handlers.core.errors import Conflict, NotFound
from handlers.core.queries import fetch_one
from handlers.core.tasks import Effects, Queued
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import ledger
from handlers.rules.calendar import local_day
from handlers.rules.expiry import expiry_date
from handlers.rules.tiers import (
    Progress,
    evaluate_downgrade,
    evaluate_upgrade,
    progress,
    purchasable_tiers,
)
from handlers.rules.tiers import window_days as ladder_window
from handlers.rules.tiers_model import Tier, WindowStats
from models.loyalty import MemberTier, TierChange
from models.member import Member
from models.merchant import Merchant
from models.points import PointsKind, PointsTransaction

log = logging.getLogger(__name__)
DEFAULT_WINDOW_DAYS = 365


@dataclass(frozen=True, slots=True)
class TierView:
    tier: Tier
    since: datetime
    tiers_version: int
    progress: Progress | None
    purchasable: list[Tier]


@dataclass(frozen=True, slots=True)
class TierChangeResult:
    from_code: str
    to_code: str
    to_name: str
    reason: str
    gift_points: int


TIER_UPGRADED = "tier.upgraded"


# Earn kinds are exactly the PointsKind values starting with "earn_" (checked by a test).
_WINDOW_SQL = """
SELECT w.spend, w.earned, w.recharge,
  (SELECT tier_code FROM member_tier WHERE member_id = :member) AS tier_code
FROM memberbot_tier_window(:merchant, :member, :since) AS w
"""


async def window_stats(merchant_id: int, member_id: int, window_days: int, now: datetime) -> WindowStats:
    """Cash spend, points earned net of clawed-back earns, and top-up principal in the window: one query."""
    return (await _stats_and_tier(merchant_id, member_id, window_days, now))[0]


async def _stats_and_tier(
    merchant_id: int, member_id: int, window_days: int, now: datetime
) -> tuple[WindowStats, str | None]:
    """The window stats and the stored tier code (None: never changed tier), in one query."""
    row = await fetch_one(
        _WINDOW_SQL, merchant=merchant_id, member=member_id, since=now - timedelta(days=window_days)
    )
    stats = WindowStats(
        spend_fen=int(row["spend"]),
        recharge_fen=int(row["recharge"]),
        points_earned=max(int(row["earned"]), 0),
    )
    return stats, row["tier_code"]


def window_days(tiers: list[Tier]) -> int:
    """The rolling window (days) the ladder's criteria count over."""
    return ladder_window(tiers, DEFAULT_WINDOW_DAYS)


async def _lock_account_first(merchant_id: int, member_id: int) -> None:
    """Lock the member's points account before their tier row, in a change that may post points: a
    purchase holds the account while its triggers write the member's facts row, which a tier change's
    trigger (migration 0029) writes too, so the opposite order deadlocks against concurrent purchases.
    An unknown member is left to `_state`'s own 404."""
    with contextlib.suppress(NotFound):
        await ledger.lock_account(merchant_id, member_id)


async def _state(merchant_id: int, member_id: int, tiers: list[Tier], *, lock: bool) -> MemberTier:
    query = MemberTier.select_for_update() if lock else MemberTier
    state = await query.get_or_none(member_id=member_id)
    if state is None:
        member = await Member.get_or_none(id=member_id, merchant_id=merchant_id)
        if member is None:
            raise NotFound("会员不存在", field="member")
        try:
            async with in_transaction():
                await MemberTier.create(
                    merchant_id=merchant_id,
                    member_id=member_id,
                    tier_code=tiers[0].code,
                    since=member.registered_at,
                )
        except IntegrityError:
            pass
        state = await query.get(member_id=member_id)
    return state


async def tier_code(merchant_id: int, member_id: int) -> str:
    """The member's tier code as stored (the base tier's code if they never changed tier)."""
    state = await queries.first(MemberTier, member_id=member_id)
    if state is not None:
        return state.tier_code
    _, tiers = await loyalty_config.current_tiers(merchant_id)
    return tiers[0].code


async def current(merchant: Merchant, member_id: int, *, now: datetime) -> TierView:
    version, tiers = await loyalty_config.current_tiers(merchant.id)
    state = await _state(merchant.id, member_id, tiers, lock=False)
    tier = loyalty_config.tier_by_code(tiers, state.tier_code)
    stats = await window_stats(merchant.id, member_id, window_days(tiers), now)
    window_end = local_day(now, merchant.timezone) + timedelta(days=window_days(tiers))
    return TierView(
        tier,
        state.since,
        version,
        progress(tiers, tier.code, stats, window_end),
        purchasable_tiers(tiers, tier.code),
    )


async def evaluate(
    merchant: Merchant, member_id: int, *, now: datetime, key: str, effects: Effects
) -> TierChangeResult | None:
    """After activity: move the member up to the highest tier their window stats earn, if any.

    Most activity earns no upgrade, so one unlocked read decides that first. It misses nothing: of two
    concurrent activities, the one that commits later evaluates after both commits and sees both."""
    _, tiers = await loyalty_config.current_tiers(merchant.id)
    stats, code = await _stats_and_tier(merchant.id, member_id, window_days(tiers), now)
    if evaluate_upgrade(tiers, loyalty_config.tier_by_code(tiers, code or tiers[0].code).code, stats) is None:
        return None
    async with in_transaction():
        await _lock_account_first(merchant.id, member_id)
        state = await _state(merchant.id, member_id, tiers, lock=True)
        if await TierChange.exists(merchant_id=merchant.id, idempotency_key=f"{key}:tier"):
            return None  # this activity was evaluated already (a replayed request)
        stats = await window_stats(merchant.id, member_id, window_days(tiers), now)
        current_tier = loyalty_config.tier_by_code(tiers, state.tier_code)
        target = evaluate_upgrade(tiers, current_tier.code, stats)
        if target is None:
            return None
        result = await _change(merchant, state, current_tier, target, "upgrade", key=f"{key}:tier", now=now)
        queued = await _queue_upgraded(
            effects, merchant, member_id, target, f"{key}:tier", result.gift_points
        )
    await effects.after_commit(queued)
    return result


async def buy_upgrade(
    merchant: Merchant,
    member_id: int,
    code: str,
    *,
    key: str,
    now: datetime,
    effects: Effects,
    actor: str = "member",
) -> TierChangeResult:
    """Upgrade by spending points (e.g. 银卡 → 金卡 for 1,000 points): one transaction, or nothing."""
    _, tiers = await loyalty_config.current_tiers(merchant.id)
    async with in_transaction():
        await _lock_account_first(merchant.id, member_id)
        state = await _state(merchant.id, member_id, tiers, lock=True)
        replay = await TierChange.get_or_none(merchant_id=merchant.id, idempotency_key=key)
        if replay is not None:
            bought = loyalty_config.tier_by_code(tiers, replay.to_code)
            return TierChangeResult(replay.from_code, replay.to_code, bought.name, replay.reason, 0)
        current_tier = loyalty_config.tier_by_code(tiers, state.tier_code)
        target = next((t for t in purchasable_tiers(tiers, current_tier.code) if t.code == code), None)
        if target is None or target.upgrade_cost_points is None:
            raise Conflict(f"当前等级不能用积分升级到 {code}", field="tier")
        await ledger.debit(
            merchant.id,
            member_id,
            target.upgrade_cost_points,
            PointsKind.SPEND_UPGRADE,
            key=f"{key}:points",
            now=now,
            actor=actor,
            reason=f"积分升级为{target.name}",
        )
        result = await _change(merchant, state, current_tier, target, "purchase_upgrade", key=key, now=now)
        queued = await _queue_upgraded(effects, merchant, member_id, target, key, result.gift_points)
    await effects.after_commit(queued)
    return result


async def _change(
    merchant: Merchant, state: MemberTier, old: Tier, new: Tier, reason: str, *, key: str, now: datetime
) -> TierChangeResult:
    await TierChange.create(
        merchant_id=merchant.id,
        member_id=state.member_id,
        from_code=old.code,
        to_code=new.code,
        reason=reason,
        idempotency_key=key,
    )
    state.tier_code, state.since = new.code, now
    await state.save(update_fields=["tier_code", "since"])
    gift = new.benefits.upgrade_gift_points if new.rank > old.rank else 0
    gift_key = f"tiergift:{state.member_id}:{new.code}"
    if gift and await PointsTransaction.exists(merchant_id=merchant.id, idempotency_key=gift_key):
        gift = 0  # once per member and tier, whatever the ladder's gift is today
    if gift:
        program = await loyalty_config.program(merchant.id)
        await ledger.credit(
            merchant.id,
            state.member_id,
            gift,
            PointsKind.EARN_TIER_GIFT,
            key=gift_key,
            now=now,
            expires_at=expiry_date(now, program.expiry, merchant.timezone),
            reason=f"升级{new.name}礼包",
        )
    return TierChangeResult(old.code, new.code, new.name, reason, gift)


async def _queue_upgraded(
    effects: Effects, merchant: Merchant, member_id: int, tier: Tier, key: str, gift_points: int
) -> Queued:
    """The `tier.upgraded` effect, keyed by the tier change (its gifts go once per member and tier)."""
    payload = {
        "merchant_id": merchant.id,
        "member_id": member_id,
        "tier": tier.code,
        "change": key,
        "gift_points": gift_points,
    }
    return await effects.queue(TIER_UPGRADED, key, payload, merchant_id=merchant.id)


async def review_downgrades(now: datetime, merchant_id: int | None = None) -> int:
    """The periodic review: members whose review is due and who no longer qualify drop a tier.

    Selects due-and-not-done reviews (`last_review_on`), so a missed run catches up once.
    """
    merchants = Merchant.filter(id=merchant_id) if merchant_id is not None else Merchant.all()
    changed = 0
    for merchant in await merchants:
        _, tiers = await loyalty_config.current_tiers(merchant.id)
        reviewable = [t.code for t in tiers if t.downgrade.enabled]
        today = local_day(now, merchant.timezone)
        member_ids: list[int] = await MemberTier.filter(  # type: ignore[assignment]
            merchant_id=merchant.id, tier_code__in=reviewable
        ).values_list("member_id", flat=True)
        for member_id in member_ids:
            changed += await _review_one(merchant, member_id, tiers, today, now)
    return changed


async def _review_one(
    merchant: Merchant, member_id: int, tiers: list[Tier], today: date, now: datetime
) -> int:
    async with in_transaction():
        state = await MemberTier.select_for_update().get(member_id=member_id)
        stats = await window_stats(merchant.id, member_id, window_days(tiers), now)  # read under the lock
        current_tier = loyalty_config.tier_by_code(tiers, state.tier_code)
        since = local_day(state.since, merchant.timezone)
        target = evaluate_downgrade(
            tiers, current_tier.code, stats, since, today, last_review=state.last_review_on
        )
        state.last_review_on = today
        await state.save(update_fields=["last_review_on"])
        if target is None:
            return 0
        await _change(
            merchant,
            state,
            current_tier,
            target,
            "downgrade",
            key=f"downgrade:{member_id}:{today.isoformat()}",
            now=now,
        )
        return 1
