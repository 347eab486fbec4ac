"""Warnings before a downgrade review: a member who, by the review's own rule (`handlers.rules.tiers`)
on today's window stats, would drop a tier at their next review is told what keeping it takes, the
tier's `downgrade.warn_days` ahead (default 7; 0: never) — once per member and review, however often
the job runs (the notice's event key names the tier and the review date).

It lives beside the review, not in `handlers.notices`, because it reads the ladder and the window
stats: the loyalty package uses notices, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from tortoise.transactions import in_transaction

from handlers.core.tasks import Effects, Queued
from handlers.loyalty import config as loyalty_config
from handlers.loyalty.tiers import window_days, window_stats
from handlers.notices.delivery import queue_notice
from handlers.rules.calendar import local_day
from handlers.rules.tiers import downgrade_warning, next_review
from handlers.rules.tiers_model import Tier
from models.loyalty import MemberTier
from models.merchant import Merchant
from models.notice import NoticeDelivery

KIND = "tier_downgrade_warning"
BATCH = 500

Due = tuple[MemberTier, Tier, date]


async def downgrade_warnings(now: datetime, effects: Effects) -> dict[str, int]:
    """Every merchant's members whose next review is within their tier's warning days and who would not
    keep the tier at it: one `tier_downgrade_warning` each."""
    warned = 0
    for merchant_id, tz in await Merchant.all().order_by("id").values_list("id", "timezone"):
        _, tiers = await loyalty_config.current_tiers(merchant_id)
        warned_tiers = {t.code: t for t in tiers if t.downgrade.enabled and t.downgrade.warn_days > 0}
        if warned_tiers:
            warned += await _warn_merchant(merchant_id, tz, tiers, warned_tiers, now, effects)
    return {"warned": warned}


async def _warn_merchant(
    merchant_id: int,
    tz: str,
    tiers: list[Tier],
    warned_tiers: dict[str, Tier],
    now: datetime,
    effects: Effects,
) -> int:
    today = local_day(now, tz)
    warned, last_id = 0, 0
    while True:
        batch = (
            await MemberTier.filter(
                merchant_id=merchant_id,
                tier_code__in=list(warned_tiers),
                id__gt=last_id,
                member__anonymized_at__isnull=True,
            )
            .order_by("id")
            .limit(BATCH)
        )
        if not batch:
            return warned
        last_id = batch[-1].id
        due = await _not_yet_warned(merchant_id, _due(batch, warned_tiers, tz, today))
        notices: list[tuple[int, str, dict[str, str]]] = []
        for state, tier, review in due:
            stats = await window_stats(merchant_id, state.member_id, window_days(tiers), now)
            since = local_day(state.since, tz)
            text = downgrade_warning(tiers, tier.code, stats, since, review, last_review=state.last_review_on)
            if text is not None:
                context = {"tier": tier.name, "review_date": review.isoformat(), "progress": text}
                notices.append((state.member_id, _event_key(tier, review), context))
        queued: list[Queued] = []
        async with in_transaction():
            for member_id, event_key, context in notices:
                notice = await queue_notice(
                    effects,
                    KIND,
                    merchant_id=merchant_id,
                    member_id=member_id,
                    event_key=event_key,
                    context=context,
                )
                if notice is not None:
                    queued.append(notice)
        await effects.after_commit(*queued)
        warned += len(queued)


def _due(batch: Sequence[MemberTier], warned_tiers: dict[str, Tier], tz: str, today: date) -> list[Due]:
    """The members of `batch` whose next review falls within their tier's warning days."""
    due: list[Due] = []
    for state in batch:
        tier = warned_tiers[state.tier_code]
        review = next_review(tier, local_day(state.since, tz), today, state.last_review_on)
        if review is not None and (review - today).days <= tier.downgrade.warn_days:
            due.append((state, tier, review))
    return due


async def _not_yet_warned(merchant_id: int, due: list[Due]) -> list[Due]:
    """`due` without the members already warned about that review (their window stats are not read)."""
    if not due:
        return []
    keys = {_event_key(tier, review) for _, tier, review in due}
    done = set(
        await NoticeDelivery.filter(
            merchant_id=merchant_id,
            kind=KIND,
            member_id__in=[state.member_id for state, _, _ in due],
            event_key__in=list(keys),
        ).values_list("member_id", "event_key")
    )
    return [entry for entry in due if (entry[0].member_id, _event_key(entry[1], entry[2])) not in done]


def _event_key(tier: Tier, review: date) -> str:
    return f"tier_review:{tier.code}:{review.isoformat()}"
