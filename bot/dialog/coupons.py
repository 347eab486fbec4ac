"""Chat keyword 优惠券 (coupons, menu key MENU_COUPONS): the member's usable coupons, codes, validity."""

from __future__ import annotations

from bot.dialog.router import Router
from bot.dialog.turn import Turn
from handlers.core.chat import ChatReply
from handlers.coupons import redeem as coupons
from handlers.rules.coupons import until_text

MAX_SHOWN = 10


async def my_coupons(turn: Turn) -> ChatReply:
    member = await turn.ensure_member()
    now = turn.now()
    usable = await coupons.member_coupons(turn.merchant, member.id, state="usable", now=now)
    shown = [
        {
            "name": view.template.name,
            "description": view.description,
            "code": view.coupon.code,
            "until": until_text(view.coupon.valid_until, turn.merchant.timezone),
        }
        for view in usable[:MAX_SHOWN]
    ]
    return await turn.reply("coupons", coupons=shown, more=max(len(usable) - MAX_SHOWN, 0))


def add_coupon_intents(router: Router) -> None:
    router.add_intent(
        "coupons",
        my_coupons,
        keywords=("优惠券", "coupons", "coupon", "我的优惠券", "券"),
        menu_keys=("MENU_COUPONS",),
    )
