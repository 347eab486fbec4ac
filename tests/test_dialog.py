from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

import pytest

from bot.dialog import Dispatcher, Router
from bot.dialog.intents import build_router
from bot.dialog.router import keyword_form
from bot.dialog.state import DialogStore
from handlers.core.chat import IncomingMessage, TextReply
from handlers.staff.merchants import MerchantInput, create_merchant
from models.member import Gender, Member
from models.merchant import Merchant, ReplyTemplate
from tests.support.factories import EFFECTS
from webhooks.appkeys import DISPATCHER, REDIS, RENDERER, RUNTIME

OPENID = "o-alice-0000000000000000001"
HELP_MARK = "回复以下关键词"


def text(content: str, openid: str = OPENID) -> IncomingMessage:
    return IncomingMessage(openid=openid, kind="text", created_at=datetime.now(UTC), content=content)


def event(name: str, key: str = "", openid: str = OPENID) -> IncomingMessage:
    now = datetime.now(UTC)
    return IncomingMessage(openid=openid, kind="event", created_at=now, event=name, event_key=key)


async def merchant(slug: str = "cafe", name: str = "街角咖啡") -> Merchant:
    return await create_merchant(MerchantInput(slug=slug, name=name))


@pytest.fixture
async def app(aiohttp_client: Any, make_app: Any) -> Any:
    return (await aiohttp_client(make_app())).app


async def say(app: Any, shop: Merchant, content: str, openid: str = OPENID) -> str:
    reply = await app[DISPATCHER].dispatch(shop, text(content, openid))
    assert isinstance(reply, TextReply)
    return reply.text


async def test_help_keywords_in_both_languages_and_any_spacing(app: Any) -> None:
    shop = await merchant()
    for word in ("帮助", "help", " HELP ", "？", "?", "\u3000菜单\u3000", "Menu"):
        reply = await say(app, shop, word)
        assert HELP_MARK in reply and "街角咖啡" in reply, word


async def test_help_lists_every_keyword_users_can_send(app: Any) -> None:
    reply = await say(app, await merchant(), "帮助")
    for intent in build_router().intents.values():
        assert f"【{intent.keywords[0]}】" in reply, intent.name


@pytest.mark.parametrize("content", ["你好", "asdf", "", "   ", "13800138000"])
async def test_unknown_text_gets_the_help_menu(app: Any, content: str) -> None:
    assert HELP_MARK in await say(app, await merchant(), content)


@pytest.mark.parametrize("kind", ["image", "voice", "video", "location", "link", "shortvideo"])
async def test_other_message_kinds_get_a_polite_text_only_reply(app: Any, kind: str) -> None:
    message = IncomingMessage(openid=OPENID, kind=kind, created_at=datetime.now(UTC))
    reply = await app[DISPATCHER].dispatch(await merchant(), message)
    assert isinstance(reply, TextReply)
    assert "暂时只能理解文字消息" in reply.text and "帮助" in reply.text


async def test_full_registration_dialog(app: Any) -> None:
    shop = await merchant()
    assert "手机号" in await say(app, shop, "注册")
    member = await Member.get(merchant_id=shop.id, openid=OPENID)
    assert member.phone is None and member.profile_completed_at is None
    assert "生日" in await say(app, shop, "138-0013-8000")
    assert "性别" in await say(app, shop, "1990年5月20日")
    done = await say(app, shop, "女")
    await member.refresh_from_db()
    assert member.code in done and "资料已完善" in done
    assert (member.phone, member.birthday, member.gender) == ("13800138000", date(1990, 5, 20), Gender.FEMALE)
    assert member.profile_completed_at is not None
    assert await app[REDIS].get(DialogStore.key(shop.id, OPENID)) is None
    assert "已经是街角咖啡的会员" in await say(app, shop, "注册")
    me = await say(app, shop, "我的")
    assert member.code in me and "138****8000" in me and "1990-05-20" in me and "女" in me


async def test_english_keywords(app: Any) -> None:
    shop = await merchant()
    assert "手机号" in await say(app, shop, "Register")
    assert "已取消" in await say(app, shop, "CANCEL")
    me = await say(app, shop, "me")
    member = await Member.get(merchant_id=shop.id, openid=OPENID)
    assert member.code in me and "资料尚未完善" in me


@pytest.mark.parametrize(
    ("answers", "bad", "reason"),
    [
        ((), "12345", "手机号格式不正确"),
        (("13800138000",), "2999-01-01", "生日必须是过去的日期"),
        (("13800138000",), "五月二十", "生日格式不正确"),
        (("13800138000", "1990-05-20"), "不告诉你", "请回复 男、女 或 保密"),
    ],
)
async def test_invalid_answer_is_re_asked_with_the_reason_and_changes_nothing(
    app: Any, answers: tuple[str, ...], bad: str, reason: str
) -> None:
    shop = await merchant()
    await say(app, shop, "注册")
    for answer in answers:
        await say(app, shop, answer)
    key = DialogStore.key(shop.id, OPENID)
    before = await app[REDIS].get(key)
    reply = await say(app, shop, bad)
    assert reason in reply and "取消" in reply
    assert await app[REDIS].get(key) == before
    member = await Member.get(merchant_id=shop.id, openid=OPENID)
    assert (member.phone, member.birthday, member.gender, member.profile_completed_at) == (None,) * 4


async def test_steps_already_filled_are_skipped(app: Any) -> None:
    shop = await merchant()
    await app[DISPATCHER].dispatch(shop, event("subscribe"))
    await Member.filter(merchant_id=shop.id, openid=OPENID).update(phone="13900139000", gender=Gender.MALE)
    assert "生日" in await say(app, shop, "注册")
    assert "资料已完善" in await say(app, shop, "2000-02-29")
    member = await Member.get(merchant_id=shop.id, openid=OPENID)
    assert (member.phone, member.gender, member.birthday) == ("13900139000", Gender.MALE, date(2000, 2, 29))


async def test_cancel_ends_the_dialog_and_nothing_is_saved(app: Any) -> None:
    shop = await merchant()
    await say(app, shop, "注册")
    await say(app, shop, "13800138000")
    assert "已取消" in await say(app, shop, "取消")
    assert HELP_MARK in await say(app, shop, "1990-05-20")  # no dialog any more
    assert (await Member.get(merchant_id=shop.id, openid=OPENID)).phone is None
    assert "没有需要取消" in await say(app, shop, "取消")


async def test_help_during_a_dialog_keeps_it(app: Any) -> None:
    shop = await merchant()
    await say(app, shop, "注册")
    reply = await say(app, shop, "帮助")
    assert HELP_MARK in reply and "正在填写会员资料" in reply
    assert "生日" in await say(app, shop, "13800138000")


async def test_register_again_during_the_dialog_resumes_it(app: Any) -> None:
    shop = await merchant()
    await say(app, shop, "注册")
    await say(app, shop, "13800138000")
    assert "生日" in await say(app, shop, "注册")
    await say(app, shop, "1990-05-20")
    assert "资料已完善" in await say(app, shop, "保密")
    assert (await Member.get(merchant_id=shop.id, openid=OPENID)).phone == "13800138000"


async def test_dialog_ends_silently_when_its_ttl_lapses(app: Any) -> None:
    shop = await merchant()
    dispatcher = Dispatcher(
        redis=app[REDIS],
        renderer=app[RENDERER],
        secret=app[RUNTIME].secret,
        base_url=app[RUNTIME].base_url,
        dialog_ttl=0.05,
        effects=EFFECTS,
    )
    first = await dispatcher.dispatch(shop, text("注册"))
    assert isinstance(first, TextReply) and "手机号" in first.text
    await asyncio.sleep(0.15)
    late = await dispatcher.dispatch(shop, text("13800138000"))
    assert isinstance(late, TextReply) and HELP_MARK in late.text and "正在填写会员资料" not in late.text
    assert (await Member.get(merchant_id=shop.id, openid=OPENID)).phone is None


async def test_unreadable_dialog_state_counts_as_none(app: Any) -> None:
    shop = await merchant()
    await app[REDIS].set(DialogStore.key(shop.id, OPENID), b"{not json")
    assert HELP_MARK in await say(app, shop, "13800138000")
    assert "没有需要取消" in await say(app, shop, "取消")


async def test_menu_clicks_route_to_the_same_intents(app: Any) -> None:
    shop = await merchant()
    dispatch = app[DISPATCHER].dispatch
    replies = {
        key: await dispatch(shop, event("click", key))
        for key in ("MENU_HELP", "MENU_REGISTER", "MENU_CANCEL", "MENU_ME", "MENU_UNKNOWN")
    }
    texts = {key: reply.text for key, reply in replies.items() if isinstance(reply, TextReply)}
    assert HELP_MARK in texts["MENU_HELP"] and HELP_MARK in texts["MENU_UNKNOWN"]
    assert "手机号" in texts["MENU_REGISTER"] and "已取消" in texts["MENU_CANCEL"]
    assert (await Member.get(merchant_id=shop.id, openid=OPENID)).code in texts["MENU_ME"]


@pytest.mark.parametrize("name", ["view", "location", "templatesendjobfinish", "subscribe_msg_popup_event"])
async def test_other_events_get_no_reply(app: Any, name: str) -> None:
    assert await app[DISPATCHER].dispatch(await merchant(), event(name, "x")) is None


async def test_a_merchant_override_of_help_is_used(app: Any) -> None:
    shop, other = await merchant(), await merchant("salon", "美发沙龙")
    await ReplyTemplate.create(merchant=shop, name="help", source="{{ merchant_name }}专属菜单：回复 注册")
    assert await say(app, shop, "帮助") == "街角咖啡专属菜单：回复 注册"
    assert HELP_MARK in await say(app, other, "帮助")


async def test_same_openid_under_two_merchants_is_two_members_with_separate_dialogs(app: Any) -> None:
    cafe, salon = await merchant(), await merchant("salon", "美发沙龙")
    await say(app, cafe, "注册")
    assert HELP_MARK in await say(app, salon, "13800138000")  # the cafe's dialog is not the salon's
    await say(app, salon, "注册")
    assert "生日" in await say(app, cafe, "13800138000")
    assert "生日" in await say(app, salon, "13900139000")
    rows = await Member.filter(openid=OPENID).order_by("merchant_id").values_list("merchant_id", "phone")
    assert rows == [(cafe.id, None), (salon.id, None)]
    assert "已取消" in await say(app, cafe, "取消")
    assert "性别" in await say(app, salon, "1990-05-20")  # cancelling at the cafe left the salon's dialog


async def test_a_feature_adds_an_intent_with_one_registration(app: Any) -> None:
    router = build_router()

    async def lucky_draw(turn: Any) -> TextReply:
        return TextReply(f"抽奖 {turn.merchant.slug}")

    router.add_intent("lucky_draw", lucky_draw, keywords=("抽奖", "Lucky Draw"), menu_keys=("MENU_DRAW",))
    dispatcher = Dispatcher(
        redis=app[REDIS],
        renderer=app[RENDERER],
        secret=app[RUNTIME].secret,
        base_url=app[RUNTIME].base_url,
        router=router,
        effects=EFFECTS,
    )
    shop = await merchant()
    assert await dispatcher.dispatch(shop, text(" lucky  DRAW ")) == TextReply("抽奖 cafe")
    assert await dispatcher.dispatch(shop, event("click", "MENU_DRAW")) == TextReply("抽奖 cafe")


async def test_only_intents_that_declare_it_read_the_open_dialog(app: Any) -> None:
    """Keyword intents that do not read the dialog skip loading it; one that reads it undeclared fails
    loudly rather than answering as if no dialog were open."""
    router = build_router()

    async def peek(turn: Any) -> TextReply:
        return TextReply(f"open: {turn.state.flow if turn.state else '-'}")

    router.add_intent("peek", peek, keywords=("看看",), uses_dialog=True)
    router.add_intent("careless", peek, keywords=("随便",))
    dispatcher = Dispatcher(
        redis=app[REDIS],
        renderer=app[RENDERER],
        secret=app[RUNTIME].secret,
        base_url=app[RUNTIME].base_url,
        router=router,
        effects=EFFECTS,
    )
    shop = await merchant()
    await dispatcher.dispatch(shop, text("注册"))  # opens the profile dialog
    assert await dispatcher.dispatch(shop, text("看看")) == TextReply("open: profile")
    with pytest.raises(RuntimeError, match="uses_dialog=True"):
        await dispatcher.dispatch(shop, text("随便"))


async def test_a_keyword_cannot_be_claimed_twice() -> None:
    router: Router = build_router()

    async def other(turn: Any) -> None:
        return None

    with pytest.raises(ValueError, match="already registered"):
        router.add_intent("mine", other, keywords=("ＨＥＬＰ",))
    assert keyword_form("ＨＥＬＰ") == "help"
