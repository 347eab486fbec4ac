"""Loyalty chat intents: 签到 (check in), 积分 (points), 会员卡 (card link), 等级 (tier).

Like 我的 and 注册, each intent serves any follower: a follower the bot does not know yet (one who
followed before the bot existed) becomes a member on first use via `turn.ensure_member()`.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from bot.dialog.router import Router
from bot.dialog.turn import Turn
from handlers.core.chat import Article, ChatReply, NewsReply
from handlers.loyalty import checkin, points_view, tiers
from handlers.loyalty.checkin import NextReward
from handlers.loyalty.points_view import LedgerRow
from handlers.members import member_qr
from handlers.members.blocking import MemberBlocked

RECENT_ROWS = 5


def _reward(reward: NextReward | None) -> dict[str, int]:
    if reward is None:
        return {"next_days": 0, "next_points": 0}
    return {"next_days": reward.days, "next_points": reward.points}


async def check_in(turn: Turn) -> ChatReply:
    try:
        result = await checkin.check_in_follower(
            turn.merchant, turn.openid, now=turn.now(), effects=turn.services.effects
        )
        if result is None:  # a follower the bot does not know yet becomes a member first
            member = await turn.ensure_member()
            result = await checkin.check_in(
                turn.merchant, member.id, now=turn.now(), effects=turn.services.effects
            )
    except MemberBlocked:
        return await turn.reply("member_blocked")
    template = "checkin_already" if result.already else "checkin_done"
    return await turn.reply(
        template,
        points=result.points,
        bonus=result.bonus,
        streak=result.streak,
        balance=result.balance,
        **_reward(result.next_reward),
    )


def _row(row: LedgerRow, zone: ZoneInfo) -> dict[str, str]:
    return {
        "when": row.created_at.astimezone(zone).strftime("%m-%d %H:%M"),
        "label": row.label,
        "delta": f"{row.delta:+d}",
    }


async def points_summary(turn: Turn) -> ChatReply:
    member = await turn.ensure_member()
    now = turn.now()
    found = await points_view.summary(turn.merchant.id, member.id, now=now)
    recent = await points_view.ledger(turn.merchant.id, member.id, limit=RECENT_ROWS)
    zone = ZoneInfo(turn.merchant.timezone)
    first = found.expiring_first_at
    return await turn.reply(
        "points_summary",
        balance=found.balance,
        pending=found.pending,
        expiring=found.expiring,
        expiring_date=first.astimezone(zone).date().isoformat() if first else "",
        recent=[_row(row, zone) for row in recent.rows],
    )


async def member_card(turn: Turn) -> ChatReply:
    member = await turn.ensure_member()
    token = member_qr.link_token(turn.services.secret, turn.merchant.id, member.id, now=turn.now())
    description = await turn.reply("card_link", code=member.code, minutes=member_qr.LINK_TTL_SECONDS // 60)
    article = Article(
        title=f"{turn.merchant.name}会员卡",
        description=description.text,
        url=member_qr.card_url(turn.services.base_url, turn.merchant.slug, token),
    )
    return NewsReply((article,))


async def tier_info(turn: Turn) -> ChatReply:
    member = await turn.ensure_member()
    view = await tiers.current(turn.merchant, member.id, now=turn.now())
    return await turn.reply(
        "tier_info",
        tier_name=view.tier.name,
        benefits=member_qr.benefit_lines(view.tier.benefits),
        progress=view.progress.message if view.progress else "",
        purchasable=[{"name": t.name, "cost": t.upgrade_cost_points} for t in view.purchasable],
    )


def add_loyalty_intents(router: Router) -> None:
    router.add_intent("checkin", check_in, keywords=("签到", "checkin", "打卡"), menu_keys=("MENU_CHECKIN",))
    router.add_intent(
        "points", points_summary, keywords=("积分", "points", "我的积分"), menu_keys=("MENU_POINTS",)
    )
    router.add_intent("card", member_card, keywords=("会员卡", "card", "会员码"), menu_keys=("MENU_CARD",))
    router.add_intent("tier", tier_info, keywords=("等级", "tier", "会员等级"), menu_keys=("MENU_TIER",))
