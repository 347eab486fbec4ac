from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from bot.dialog.intents import build_router
from handlers.core.chat import IncomingMessage, NewsReply, TextReply
from handlers.loyalty import ledger
from handlers.loyalty.ledger_audit import audit_points
from handlers.members import member_qr
from models.checkin import Checkin
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount, PointsKind
from tests.support.factories import AES_KEY, make_member, make_merchant
from tests.support.wechat_push import WeChatPusher
from webhooks.appkeys import DISPATCHER, RUNTIME

OPENID = "o-member-1"


def text(content: str, openid: str = OPENID) -> IncomingMessage:
    return IncomingMessage(openid=openid, kind="text", created_at=datetime.now(UTC), content=content)


def click(key: str, openid: str = OPENID) -> IncomingMessage:
    return IncomingMessage(
        openid=openid, kind="event", created_at=datetime.now(UTC), event="click", event_key=key
    )


@pytest.fixture
async def app(client: Any) -> Any:
    return client.app


@pytest.fixture
async def shop(app: Any) -> Merchant:
    return await make_merchant()


async def say(app: Any, shop: Merchant, message: IncomingMessage) -> str:
    reply = await app[DISPATCHER].dispatch(shop, message)
    assert isinstance(reply, TextReply)
    return reply.text


def test_keywords_and_menu_keys_are_registered() -> None:
    router = build_router()
    for word, name in (
        ("签到", "checkin"),
        ("积分", "points"),
        ("会员卡", "card"),
        ("等级", "tier"),
        ("CHECKIN", "checkin"),
        ("Points", "points"),
        ("card", "card"),
        ("tier", "tier"),
    ):
        intent = router.by_keyword(word)
        assert intent is not None and intent.name == name, word
    for key, name in (
        ("MENU_CHECKIN", "checkin"),
        ("MENU_POINTS", "points"),
        ("MENU_CARD", "card"),
        ("MENU_TIER", "tier"),
    ):
        intent = router.by_menu_key(key)
        assert intent is not None and intent.name == name, key


async def test_help_lists_the_loyalty_keywords(app: Any, shop: Merchant) -> None:
    reply = await say(app, shop, text("帮助"))
    assert all(f"【{word}】" in reply for word in ("签到", "积分", "会员卡", "等级"))


async def test_check_in_then_already(app: Any, shop: Merchant) -> None:
    member = await make_member(shop)
    done = await say(app, shop, text("签到"))
    assert "签到成功" in done and "获得 5 积分" in done and "连续签到 1 天" in done
    assert "再签到 6 天可额外获得 50 积分" in done
    again = await say(app, shop, click("MENU_CHECKIN"))
    assert "今天已经签到过了" in again and "当前积分 5" in again
    assert await Checkin.filter(member_id=member.id).count() == 1
    assert await audit_points() == []


async def test_an_unknown_follower_becomes_a_member_on_first_check_in(app: Any, shop: Merchant) -> None:
    reply = await say(app, shop, text("签到", openid="o-newcomer"))
    assert "签到成功" in reply
    member = await Member.get(merchant_id=shop.id, openid="o-newcomer")
    assert await Checkin.filter(member_id=member.id).count() == 1


async def test_points_shows_balance_recent_rows_and_expiring(app: Any, shop: Merchant) -> None:
    member = await make_member(shop)
    assert "暂无积分记录" in await say(app, shop, text("积分"))
    now = datetime.now(UTC)
    for n in range(6):
        await ledger.credit(
            shop.id,
            member.id,
            10,
            PointsKind.GRANT,
            key=f"g{n}",
            now=now,
            expires_at=now + timedelta(days=5 if n == 0 else 300),
        )
    await ledger.debit(shop.id, member.id, 15, PointsKind.SPEND_REDEMPTION, key="spend", now=now)
    reply = await say(app, shop, text("积分"))
    assert "可用积分：45" in reply
    assert reply.count("赠送积分 +10") == 4 and "积分兑换 -15" in reply  # the last 5 rows
    assert "待生效" not in reply and "过期" not in reply  # the soonest lot was spent first
    await ledger.credit(
        shop.id, member.id, 7, PointsKind.GRANT, key="soon", now=now, expires_at=now + timedelta(days=3)
    )
    assert "7 积分将于" in await say(app, shop, click("MENU_POINTS"))
    assert await audit_points() == []


async def test_card_is_a_news_article_linking_to_the_card_page(app: Any, shop: Merchant) -> None:
    member = await make_member(shop)
    reply = await app[DISPATCHER].dispatch(shop, text("会员卡"))
    assert isinstance(reply, NewsReply) and len(reply.articles) == 1
    article = reply.articles[0]
    assert article.title == "shop 门店会员卡" and member.code in article.description
    url = urlsplit(article.url)
    assert f"{url.scheme}://{url.netloc}" == "http://testserver" and url.path == "/card/shop"
    assert OPENID not in article.url
    token = url.query.removeprefix("t=")
    assert member_qr.verify_link(app[RUNTIME].secret, shop.id, token, now=datetime.now(UTC)) == member.id


async def test_tier_shows_name_benefits_and_progress(app: Any, shop: Merchant) -> None:
    await make_member(shop)
    reply = await say(app, shop, text("等级"))
    assert "普通会员" in reply and "银卡" in reply and "1000 元" in reply
    assert "金卡：5000 积分" in reply


async def test_loyalty_keywords_through_the_signed_webhook(client: Any, shop: Merchant) -> None:
    pusher = WeChatPusher(client, "shop", "testtoken", AES_KEY, "wxshopoa")
    checked = await pusher.text(OPENID, "签到", mode="safe")
    assert checked.type == "text" and "签到成功" in checked.content
    balance = await pusher.text(OPENID, "积分", mode="compat")
    member = await Member.get(merchant_id=shop.id, openid=OPENID)
    account = await PointsAccount.get(member_id=member.id)  # the check-in, plus any welcome bonus
    assert f"可用积分：{account.balance}" in balance.content and "签到积分 +5" in balance.content
    news = await pusher.event(OPENID, "CLICK", "MENU_CARD", mode="plain")
    assert news.type == "news" and news.articles[0]["url"].startswith("http://testserver/card/shop?t=")
    tier = await pusher.text(OPENID, "等级")
    assert "普通会员" in tier.content
    page = await client.get(news.articles[0]["url"].removeprefix("http://testserver"))
    assert page.status == 200 and member.code in await page.text()
    assert await audit_points() == []
