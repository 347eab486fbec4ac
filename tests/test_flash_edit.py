"""Changing a flash sale (秒杀) or ending it early: what may change when, the gate obeying at once in
every process, and the ledgers and the audit staying exact while buyers race the end."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from handlers.core import config_cache
from handlers.loyalty.ledger_audit import audit_points
from handlers.mall import flash
from models.loyalty import AuditLog
from models.mall import FlashSale, MallItem, MallOrder, StockMovement
from models.merchant import Merchant
from models.points import PointsAccount
from tests.support.factories import make_merchant, staff_headers
from tests.test_flash import buy, buyers, left_in_redis, make_item, new_sale, window
from webhooks.appkeys import REDIS


async def admin(client: TestClient, merchant: Merchant) -> dict[str, str]:
    return await staff_headers(client, merchant, "admin", username=f"admin{merchant.id}")


async def edit(client: TestClient, headers: dict[str, str], sale_id: int, **changes: Any) -> Any:
    return await client.patch(f"/api/admin/mall/flash-sales/{sale_id}", json=changes, headers=headers)


async def end(client: TestClient, headers: dict[str, str], sale_id: int) -> Any:
    return await client.post(f"/api/admin/mall/flash-sales/{sale_id}/end", headers=headers)


def later(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


async def error_of(response: Any) -> tuple[int, str, str]:
    error = (await response.json())["error"]
    return response.status, error.get("field", ""), error["message"]


async def test_an_edit_before_the_start_takes_effect_for_buyers(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=20)
    sale = await new_sale(client, merchant, item, stock=5, price=300, times=window(timedelta(hours=2)))
    member, other = await buyers(merchant, 2)
    early = await buy(client, merchant, member, sale["id"], "k1")
    assert (await error_of(early))[2] == "秒杀尚未开始"
    headers = await admin(client, merchant)

    starts = datetime.now(UTC) + timedelta(seconds=1)
    changed = await edit(
        client,
        headers,
        sale["id"],
        price_points=120,
        stock=3,
        limit_per_member=2,
        starts_at=starts.isoformat(),
    )
    assert changed.status == 200, await changed.text()
    body = await changed.json()
    assert (body["price_points"], body["stock"], body["limit_per_member"]) == (120, 3, 2)
    assert (await MallItem.get(id=item.id)).stock == 17  # two of the five units went back to the item

    await asyncio.sleep(max((starts - datetime.now(UTC)).total_seconds(), 0) + 0.05)
    for key in ("k1", "k2"):
        bought = await buy(client, merchant, member, sale["id"], key)
        assert bought.status == 200 and (await bought.json())["points"] == 120
    assert (await error_of(await buy(client, merchant, member, sale["id"], "k3")))[2] == "每人限购 2 件"
    assert (await buy(client, merchant, other, sale["id"], "k1")).status == 200
    assert (await error_of(await buy(client, merchant, other, sale["id"], "k2")))[2] == "已抢光"
    assert (await PointsAccount.get(member_id=member.id)).balance == 1_000 - 240
    moves = await StockMovement.filter(item_id=item.id, reason="flash_allot").values_list("delta", flat=True)
    assert sorted(moves) == [-5, 2]
    [entry] = await AuditLog.filter(action="flash_sale.update")
    assert entry.detail["price_points"] == [300, 120] and entry.detail["stock"] == [5, 3]
    assert await audit_points() == []


async def test_a_process_holding_the_old_terms_charges_the_new_price(client: TestClient) -> None:
    """Another process read the sale before the edit and keeps its terms (`config_cache.fix`): the
    configuration version its attempt observes has moved, so the order is written at the new price."""
    merchant = await make_merchant()
    item = await make_item(merchant)
    starts = datetime.now(UTC) + timedelta(seconds=1)
    times = {"starts_at": starts.isoformat(), "ends_at": (starts + timedelta(hours=1)).isoformat()}
    sale = await new_sale(client, merchant, item, price=300, times=times)
    [member] = await buyers(merchant, 1)
    assert (await error_of(await buy(client, merchant, member, sale["id"], "k0")))[2] == "秒杀尚未开始"
    stale = config_cache.fixed(("flash_sale", sale["id"]))
    assert stale is not None and stale[1].price_points == 300

    assert (await edit(client, await admin(client, merchant), sale["id"], price_points=90)).status == 200
    config_cache.fix(("flash_sale", sale["id"]), stale)  # as another process still holds it
    await asyncio.sleep(max((starts - datetime.now(UTC)).total_seconds(), 0) + 0.05)
    bought = await buy(client, merchant, member, sale["id"], "k1")
    assert bought.status == 200 and (await bought.json())["points"] == 90
    assert (await PointsAccount.get(member_id=member.id)).balance == 910


async def test_refused_edits_change_nothing(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=10)
    sale = await new_sale(client, merchant, item, stock=4, price=100, limit=2)
    [member] = await buyers(merchant, 1)
    assert (await buy(client, merchant, member, sale["id"], "k1")).status == 200
    headers = await admin(client, merchant)
    gate_before = await client.app[REDIS].get(flash.gate_keys(sale["id"])[3])
    row_before = await FlashSale.get(id=sale["id"])

    refusals = [
        (dict(price_points=50), (409, "price_points")),
        (dict(limit_per_member=1), (409, "limit_per_member")),
        (dict(starts_at=later(-30)), (409, "starts_at")),
        (dict(stock=3), (409, "stock")),  # fewer units once started
        (dict(stock=11), (409, "stock")),  # more than the item has
        (dict(ends_at=later(-1)), (400, "ends_at")),
        (dict(price_points=0), (400, "price_points")),
    ]
    for changes, expected in refusals:
        status, field, _ = await error_of(await edit(client, headers, sale["id"], **changes))
        assert (status, field) == expected, changes
    manager = await staff_headers(client, merchant, "manager", username="mgr-edit")
    assert (await edit(client, manager, sale["id"], ends_at=later(90))).status == 403
    assert (await end(client, manager, sale["id"])).status == 403
    assert (await edit(client, headers, 999_999, ends_at=later(90))).status == 404

    row = await FlashSale.get(id=sale["id"])
    fields = ("price_points", "stock", "sold", "limit_per_member", "starts_at", "ends_at")
    assert [getattr(row, n) for n in fields] == [getattr(row_before, n) for n in fields]
    assert (await MallItem.get(id=item.id)).stock == 6
    assert await client.app[REDIS].get(flash.gate_keys(sale["id"])[3]) == gate_before
    assert await left_in_redis(client, sale["id"]) == 3
    assert not await AuditLog.filter(action__startswith="flash_sale.").exclude(action="flash_sale.create")

    assert (await end(client, headers, sale["id"])).status == 200
    status, field, _ = await error_of(await edit(client, headers, sale["id"], ends_at=later(90)))
    assert (status, field) == (409, "flash_sale")
    assert (await end(client, headers, sale["id"])).status == 409


async def test_a_running_sale_gets_more_units_and_a_new_end_at_once(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=10)
    sale = await new_sale(client, merchant, item, stock=2)
    members = await buyers(merchant, 5)
    for member in members[:2]:
        assert (await buy(client, merchant, member, sale["id"], "k")).status == 200
    assert (await error_of(await buy(client, merchant, members[2], sale["id"], "k")))[2] == "已抢光"

    ends = datetime.now(UTC) + timedelta(hours=3)
    changed = await edit(client, await admin(client, merchant), sale["id"], stock=4, ends_at=ends.isoformat())
    assert changed.status == 200, await changed.text()
    assert await left_in_redis(client, sale["id"]) == 2
    assert await client.app[REDIS].ttl(flash.gate_keys(sale["id"])[0]) > 3 * 3600
    for member in members[2:4]:
        assert (await buy(client, merchant, member, sale["id"], "k2")).status == 200
    assert (await error_of(await buy(client, merchant, members[4], sale["id"], "k")))[2] == "已抢光"
    row = await FlashSale.get(id=sale["id"])
    assert (row.stock, row.sold, row.ends_at) == (4, 4, ends)
    assert (await MallItem.get(id=item.id)).stock == 6


async def test_a_gate_rebuilt_after_a_stock_edit_counts_the_new_stock(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=10)
    sale = await new_sale(client, merchant, item, stock=2)
    member, other = await buyers(merchant, 2)
    assert (await buy(client, merchant, member, sale["id"], "k")).status == 200
    redis = client.app[REDIS]
    await redis.delete(flash.gate_keys(sale["id"])[0])  # units left lost (an eviction, say)
    assert (await edit(client, await admin(client, merchant), sale["id"], stock=5)).status == 200
    assert (await buy(client, merchant, other, sale["id"], "x")).status == 200
    assert await left_in_redis(client, sale["id"]) == 3


async def test_ending_a_sale_while_buyers_race_it(client: TestClient) -> None:
    """Buyers keep trying while an admin ends the sale: after "end now" answers, no attempt succeeds —
    also in a process that still holds the sale's terms as open — and every unit sold is counted once
    in the sale, the item's stock movements, the points ledger and the audit."""
    merchant = await make_merchant()
    item = await make_item(merchant, stock=200)
    sale = await new_sale(client, merchant, item, stock=150, price=100)
    members = await buyers(merchant, 60)
    headers = await admin(client, merchant)
    ended, some_sold = asyncio.Event(), asyncio.Event()
    after_end: list[int] = []
    before_end: list[int] = []

    async def keep_buying(n: int) -> None:
        member = members[n]
        for attempt in range(40):
            started_after_end = ended.is_set()
            response = await buy(client, merchant, member, sale["id"], f"k{attempt}")
            if started_after_end:
                after_end.append(response.status)
                if response.status == 409:
                    assert (await response.json())["error"]["message"] == "秒杀已结束"
            else:
                before_end.append(response.status)
                if before_end.count(200) >= 20:
                    some_sold.set()
            if len(after_end) > 40:
                return

    async def end_soon() -> Any:
        await asyncio.wait_for(some_sold.wait(), 60)
        response = await end(client, headers, sale["id"])
        ended.set()
        return response

    racers = [asyncio.create_task(keep_buying(n)) for n in range(len(members))]
    response = await end_soon()
    await asyncio.gather(*racers)
    assert response.status == 200, await response.text()
    assert after_end and set(after_end) == {409}

    row = await FlashSale.get(id=sale["id"])
    orders = await MallOrder.filter(flash_sale_id=sale["id"])
    assert 0 < row.sold == len(orders) < 150
    assert all(order.created_at < row.ends_at for order in orders)
    spent = sum(1_000 - a.balance for a in await PointsAccount.filter(merchant_id=merchant.id))
    assert spent == 100 * row.sold
    assert (await MallItem.get(id=item.id)).stock == 50  # the unsold units stay with the sale
    assert await audit_points() == []
    [entry] = await AuditLog.filter(action="flash_sale.end", subject=f"flash_sale:{sale['id']}")
    assert entry.detail["sold"] == row.sold  # nothing was counted after the end committed

    # A process that read the sale while it was open still holds those terms: the gate refuses it.
    stale = await FlashSale.get(id=sale["id"])
    stale.ends_at = datetime.now(UTC) + timedelta(hours=1)
    config_cache.fix(("flash_sale", sale["id"]), (config_cache.observed(), stale))
    late = await buy(client, merchant, members[0], sale["id"], "late")
    assert await error_of(late) == (409, "flash_sale", "秒杀已结束")
    assert await MallOrder.filter(flash_sale_id=sale["id"]).count() == row.sold
