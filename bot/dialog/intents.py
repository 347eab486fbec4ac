"""The built-in intents (help, me, register, cancel), follow events, and the default router."""

from __future__ import annotations

from bot.dialog import profile
from bot.dialog.campaigns import add_campaign_intents
from bot.dialog.coupons import add_coupon_intents
from bot.dialog.invite import add_invite_intents
from bot.dialog.loyalty import add_loyalty_intents
from bot.dialog.mall import add_mall_intents
from bot.dialog.notices import add_notice_events
from bot.dialog.router import Router
from bot.dialog.turn import Turn
from bot.dialog.wallet import add_wallet_intents
from handlers.core.chat import ChatReply
from handlers.members import registration
from handlers.members.profile import mask_phone


async def help_(turn: Turn) -> ChatReply:
    return await turn.reply("help", in_dialog=turn.in_dialog)


async def unsupported(turn: Turn) -> ChatReply:
    return await turn.reply("unsupported_message", kind=turn.message.kind)


async def me(turn: Turn) -> ChatReply:
    member = await turn.ensure_member()
    return await turn.reply(
        "me",
        code=member.code,
        member_name=member.name or "",
        phone=mask_phone(member.phone),
        birthday=member.birthday.isoformat() if member.birthday else "",
        gender=member.gender.value if member.gender else "",
        profile_completed=member.profile_completed_at is not None,
    )


async def register(turn: Turn) -> ChatReply:
    return await profile.start(turn, await turn.ensure_member())


async def cancel(turn: Turn) -> ChatReply:
    if turn.state is None:
        return await turn.reply("nothing_to_cancel")
    await turn.clear_state()
    return await turn.reply("cancelled")


async def subscribed(turn: Turn) -> ChatReply:
    unionid = None if await turn.member() is not None else await turn.unionid()
    subscription = await registration.subscribe(
        turn.merchant,
        turn.openid,
        turn.message.event_key,
        secret=turn.services.secret,
        effects=turn.services.effects,
        unionid=unionid,
    )
    member = subscription.member
    return await turn.reply(
        "welcome",
        code=member.code,
        created=subscription.created,
        restored=subscription.restored,
        profile_completed=member.profile_completed_at is not None,
    )


async def scanned(turn: Turn) -> ChatReply:
    scanned = await registration.scan(
        turn.merchant, turn.openid, secret=turn.services.secret, effects=turn.services.effects
    )
    member = scanned.member
    completed = member.profile_completed_at is not None
    return await turn.reply("scan", code=member.code, profile_completed=completed)


async def unsubscribed(turn: Turn) -> None:
    await registration.unsubscribe(turn.merchant, turn.openid, secret=turn.services.secret, now=turn.now())
    await turn.clear_state()


def build_router() -> Router:
    """The router with every built-in intent; features add theirs with one `add_intent` call."""
    router = Router(fallback=help_, unsupported=unsupported)
    router.add_intent(
        "help",
        help_,
        keywords=("帮助", "help", "?", "菜单", "menu"),
        menu_keys=("MENU_HELP",),
        uses_dialog=True,
    )
    router.add_intent("me", me, keywords=("我的", "me", "个人信息"), menu_keys=("MENU_ME",))
    router.add_intent(
        "register", register, keywords=("注册", "register"), menu_keys=("MENU_REGISTER",), uses_dialog=True
    )
    router.add_intent(
        "cancel", cancel, keywords=("取消", "cancel"), menu_keys=("MENU_CANCEL",), uses_dialog=True
    )
    router.add_event("subscribe", subscribed)
    router.add_event("scan", scanned)
    router.add_event("unsubscribe", unsubscribed)
    router.add_flow(profile.FLOW, profile.answer)
    add_loyalty_intents(router)
    add_mall_intents(router)
    add_coupon_intents(router)
    add_wallet_intents(router)
    add_invite_intents(router)
    add_notice_events(router)
    add_campaign_intents(router)
    return router
