"""库存预警: a mall item's low-stock threshold, which the stock ranking flags it at."""

from __future__ import annotations

from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import NotFound
from models.mall import MallItem

MAX_THRESHOLD = 1_000_000


async def set_low_stock(merchant_id: int, item_id: int, threshold: int | None, *, actor: str) -> MallItem:
    """Set (or clear, with None) the item's threshold; audit-logged with the previous one."""
    async with in_transaction():
        item = await MallItem.select_for_update().get_or_none(id=item_id, merchant_id=merchant_id)
        if item is None:
            raise NotFound("商品不存在", field="item_id")
        previous = item.low_stock_threshold
        item.low_stock_threshold = threshold
        await item.save(update_fields=["low_stock_threshold"])
        await audit_log.record(
            merchant_id, actor, "mall.item.low_stock", str(item_id), threshold=threshold, previous=previous
        )
    return item
