"""Mall chat intents: 商城 (what can be redeemed now) and 订单 (my open orders with pick-up codes).

Redeeming itself happens in the mini-program (it needs a tap to confirm and, for shipped items, an
address); the chat shows the top items by the merchant's sort order with their points price.
"""

from __future__ import annotations

from bot.dialog.router import Router
from bot.dialog.turn import Turn
from handlers.core.chat import ChatReply
from handlers.loyalty import points_view
from handlers.mall import catalogue
from handlers.mall.orders import STATUS_LABELS, local_time
from models.mall import MallItem, OrderStatus

TOP_ITEMS = 8
OPEN_ORDERS = 10


def _yuan(fen: int) -> str:
    return f"{fen / 100:.2f}".rstrip("0").rstrip(".")


async def mall_items(turn: Turn) -> ChatReply:
    member = await turn.ensure_member()
    now = turn.now()
    offers = await catalogue.catalogue(turn.merchant, member.id, now=now, limit=TOP_ITEMS)
    balance = (await points_view.summary(turn.merchant.id, member.id, now=now)).balance
    items = [
        {
            "name": o.item.name,
            "points": o.item.price_points,
            "cash": _yuan(o.item.cash_fen) if o.item.cash_fen else "",
            "sold_out": o.item.stock <= 0,
            "eligible": o.eligible,
            "limit_reached": o.remaining == 0,
        }
        for o in offers
    ]
    return await turn.reply("mall_items", items=items, balance=balance)


async def my_orders(turn: Turn) -> ChatReply:
    member = await turn.ensure_member()
    page, _ = await catalogue.orders_page(
        turn.merchant.id, member_id=member.id, open_only=True, limit=OPEN_ORDERS
    )
    tz = turn.merchant.timezone
    orders = []
    for order in page:
        item: MallItem = order.item
        status = OrderStatus(order.status)
        orders.append(
            {
                "name": item.name,
                "qty": order.qty,
                "status": STATUS_LABELS[status],
                "code": order.open_pickup_code if status is OrderStatus.AWAITING_PICKUP else "",
                "deadline": local_time(order.pickup_deadline, tz) if order.pickup_deadline else "",
                "cash": _yuan(order.cash_fen) if order.cash_fen else "",
            }
        )
    return await turn.reply("mall_orders", orders=orders)


def add_mall_intents(router: Router) -> None:
    router.add_intent("mall", mall_items, keywords=("商城", "mall", "积分商城"), menu_keys=("MENU_MALL",))
    router.add_intent(
        "orders", my_orders, keywords=("订单", "orders", "我的订单", "提货码"), menu_keys=("MENU_ORDERS",)
    )
