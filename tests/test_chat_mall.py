"""Chat 商城 and 订单: the top items with their points price, my open orders with pick-up codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.dialog.intents import build_router
from handlers.core.chat import IncomingMessage, TextReply
from handlers.mall import catalogue
from handlers.mall.orders import local_time
from models.mall import ItemKind
from models.member import Member
from models.merchant import Merchant
from tests.support.factories import EFFECTS, make_member, make_merchant
from tests.test_mall_orders import give, make_item
from webhooks.appkeys import DISPATCHER

OPENID = "o-member-1"
ADDRESS = {"name": "李四", "phone": "13900139000", "region": "上海市", "detail": "漕溪北路 1 号"}


def text(content: str) -> IncomingMessage:
    return IncomingMessage(openid=OPENID, kind="text", created_at=datetime.now(UTC), content=content)


def click(key: str) -> IncomingMessage:
    return IncomingMessage(
        openid=OPENID, kind="event", created_at=datetime.now(UTC), event="click", event_key=key
    )


@pytest.fixture
async def app(client: Any) -> Any:
    return client.app


@pytest.fixture
async def shop(app: Any) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def member(shop: Merchant) -> Member:
    member = await make_member(shop, openid=OPENID)
    await give(shop, member, 1000)
    return member


async def say(app: Any, shop: Merchant, message: IncomingMessage) -> str:
    reply = await app[DISPATCHER].dispatch(shop, message)
    assert isinstance(reply, TextReply)
    return reply.text


def test_keywords_and_menu_keys_are_registered() -> None:
    router = build_router()
    for word, name in (
        ("商城", "mall"),
        ("Mall", "mall"),
        ("积分商城", "mall"),
        ("订单", "orders"),
        ("我的订单", "orders"),
        ("提货码", "orders"),
    ):
        intent = router.by_keyword(word)
        assert intent is not None and intent.name == name, word
    for key, name in (("MENU_MALL", "mall"), ("MENU_ORDERS", "orders")):
        intent = router.by_menu_key(key)
        assert intent is not None and intent.name == name, key


async def test_mall_lists_items_on_sale_by_sort_with_prices(app: Any, shop: Merchant, member: Member) -> None:
    await make_item(shop, name="保温杯", price_points=300, sort=2, cash_fen=990)
    await make_item(shop, name="帆布袋", price_points=100, sort=1, stock=0)
    await make_item(shop, name="金卡专享", price_points=50, sort=3, min_tier_rank=2)
    await make_item(shop, name="下架品", active=False)
    reply = await say(app, shop, text("商城"))
    lines = reply.splitlines()
    assert lines[0] == "shop 门店积分商城（您的可用积分：1000）"
    assert lines[1:4] == [
        "1. 帆布袋：100 积分（已兑完）",
        "2. 保温杯：300 积分 + 9.9 元",
        "3. 金卡专享：50 积分（等级不足）",
    ]
    assert "下架品" not in reply and "小程序" in reply and "订单" in reply
    assert lines[4] == "" and len(lines) == 6, reply
    assert await say(app, shop, click("MENU_MALL")) == reply


async def test_empty_mall(app: Any, shop: Merchant, member: Member) -> None:
    assert "暂时没有可兑换的商品" in await say(app, shop, text("mall"))


async def test_orders_show_open_orders_with_codes_and_deadlines(
    app: Any, shop: Merchant, member: Member
) -> None:
    now = datetime.now(UTC)
    assert "没有进行中的订单" in await say(app, shop, text("订单"))
    cup = await make_item(shop, name="保温杯", pickup_days=7, cash_fen=500)
    pillow = await make_item(shop, name="抱枕", kind=ItemKind.SHIPPED)
    gone = await make_item(shop, name="已取消的")
    picked, _ = await catalogue.redeem(shop, member, cup.id, qty=2, client_key="a", now=now, effects=EFFECTS)
    await catalogue.redeem(
        shop, member, pillow.id, qty=1, client_key="b", now=now, address=ADDRESS, effects=EFFECTS
    )
    cancelled, _ = await catalogue.redeem(
        shop, member, gone.id, qty=1, client_key="c", now=now, effects=EFFECTS
    )
    await catalogue.cancel(shop, member, cancelled.id, now=now)
    reply = await say(app, shop, click("MENU_ORDERS"))
    deadline = local_time(now + timedelta(days=7), shop.timezone)
    assert reply.splitlines() == [
        "您的进行中订单：",
        "1. 抱枕×1：待发货",
        "2. 保温杯×2：待提货",
        f"   提货码 {picked.pickup_code}，请于 {deadline} 前到店出示，到店另付 10 元",
    ]
