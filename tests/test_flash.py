"""Flash sales (秒杀) over HTTP: admin allotment, the Redis gate, the database write, rebuilds, retries."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from handlers.loyalty import ledger
from handlers.loyalty.ledger_audit import audit_points
from handlers.mall import flash
from handlers.mall.catalogue import ItemInput, create_item, return_order
from handlers.mall.orders import expire_pickups
from handlers.staff.sessions import SessionKind, SessionStore
from models.mall import FlashSale, ItemKind, MallItem, MallOrder, OrderStatus, StockMovement
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount, PointsKind
from tests.support.factories import make_member, make_merchant, staff_headers
from webhooks.appkeys import REDIS


async def make_item(merchant: Merchant, stock: int = 50, name: str = "限量马克杯") -> MallItem:
    return await create_item(
        merchant, ItemKind.PICKUP, ItemInput(name=name, price_points=500), stock=stock, actor="test"
    )


async def give_points(merchant: Merchant, member: Member, amount: int) -> None:
    await ledger.credit(
        merchant.id,
        member.id,
        amount,
        PointsKind.GRANT,
        key=f"seed:{member.id}:{amount}",
        now=datetime.now(UTC),
        expires_at=None,
    )


async def member_headers(client: TestClient, merchant: Merchant, member: Member) -> dict[str, str]:
    issued = await SessionStore(client.app[REDIS]).issue(SessionKind.MEMBER, merchant.id, member.id)
    return {"Authorization": f"Bearer {issued.token}"}


def window(starts_in: timedelta = timedelta(minutes=-1), hours: int = 1) -> dict[str, str]:
    starts = datetime.now(UTC) + starts_in
    return {"starts_at": starts.isoformat(), "ends_at": (starts + timedelta(hours=hours)).isoformat()}


async def new_sale(
    client: TestClient,
    merchant: Merchant,
    item: MallItem,
    *,
    stock: int = 5,
    limit: int = 1,
    price: int = 100,
    times: dict[str, str] | None = None,
) -> dict[str, Any]:
    headers = await staff_headers(client, merchant, "manager", username=f"mgr{item.id}")
    body = {
        "item_id": item.id,
        "price_points": price,
        "stock": stock,
        "limit_per_member": limit,
        **(times or window()),
    }
    response = await client.post("/api/admin/mall/flash-sales", json=body, headers=headers)
    assert response.status == 201, await response.text()
    sale: dict[str, Any] = await response.json()
    return sale


async def buyers(merchant: Merchant, count: int, points_each: int = 1_000) -> list[Member]:
    members = []
    for n in range(count):
        member = await make_member(merchant, openid=f"o-buyer-{n}")
        if points_each:
            await give_points(merchant, member, points_each)
        members.append(member)
    return members


async def buy(client: TestClient, merchant: Merchant, member: Member, sale_id: int, key: str) -> Any:
    headers = await member_headers(client, merchant, member)
    return await client.post(
        f"/api/mp/{merchant.slug}/mall/flash-sales/{sale_id}/buy",
        json={"idempotency_key": key},
        headers=headers,
    )


async def left_in_redis(client: TestClient, sale_id: int) -> int:
    return int(await client.app[REDIS].get(flash.gate_keys(sale_id)[0]))


async def test_creating_a_sale_moves_the_units_from_the_item(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=20)
    sale = await new_sale(client, merchant, item, stock=8, limit=2)
    assert (sale["stock"], sale["sold"], sale["state"], sale["item_name"]) == (8, 0, "live", "限量马克杯")
    assert (await MallItem.get(id=item.id)).stock == 12
    movement = await StockMovement.get(item_id=item.id, reason="flash_allot")
    assert (movement.delta, movement.stock_after) == (-8, 12)
    assert movement.idempotency_key == f"flash_allot:{sale['id']}"
    headers = await staff_headers(client, merchant, "manager", username="lister")
    listed = await (await client.get("/api/admin/mall/flash-sales", headers=headers)).json()
    assert [s["id"] for s in listed["items"]] == [sale["id"]]


async def test_admin_refusals_change_nothing(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=3)
    manager = await staff_headers(client, merchant, "manager")
    cashier = await staff_headers(client, merchant, "cashier")
    base = {"item_id": item.id, "price_points": 100, "stock": 2, "limit_per_member": 1, **window()}
    url = "/api/admin/mall/flash-sales"
    assert (await client.post(url, json=base, headers=cashier)).status == 403
    too_many = await client.post(url, json={**base, "stock": 4}, headers=manager)
    assert too_many.status == 409 and (await too_many.json())["error"]["field"] == "stock"
    backwards = {**base, "starts_at": base["ends_at"], "ends_at": base["starts_at"]}
    refused = await client.post(url, json=backwards, headers=manager)
    assert refused.status == 400 and (await refused.json())["error"]["field"] == "ends_at"
    over_limit = await client.post(url, json={**base, "limit_per_member": 3}, headers=manager)
    assert over_limit.status == 400
    naive = await client.post(url, json={**base, "starts_at": "2030-01-01T10:00:00"}, headers=manager)
    assert naive.status == 400
    assert (await client.post(url, json={**base, "item_id": 999_999}, headers=manager)).status == 404
    assert await FlashSale.all().count() == 0
    assert (await MallItem.get(id=item.id)).stock == 3


async def test_buy_then_retry_then_limit(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant)
    sale = await new_sale(client, merchant, item, stock=5, limit=1, price=300)
    [member] = await buyers(merchant, 1)
    first = await buy(client, merchant, member, sale["id"], "k1")
    assert first.status == 200, await first.text()
    order = await first.json()
    assert (order["status"], order["points"], order["replayed"]) == ("awaiting_pickup", 300, False)
    assert order["pickup_code"]
    retry = await buy(client, merchant, member, sale["id"], "k1")
    assert (await retry.json()) == {**order, "replayed": True}
    again = await buy(client, merchant, member, sale["id"], "k2")
    assert again.status == 409 and "限购 1" in (await again.json())["error"]["message"]
    assert (await FlashSale.get(id=sale["id"])).sold == 1
    assert await MallOrder.filter(flash_sale_id=sale["id"]).count() == 1
    assert (await PointsAccount.get(member_id=member.id)).balance == 700
    assert await left_in_redis(client, sale["id"]) == 4
    assert await audit_points() == []


async def test_outside_the_window_is_refused(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant)
    later = await new_sale(client, merchant, item, times=window(starts_in=timedelta(hours=1)))
    [member] = await buyers(merchant, 1)
    early = await buy(client, merchant, member, later["id"], "k")
    assert early.status == 409 and (await early.json())["error"]["message"] == "秒杀尚未开始"
    ended = await FlashSale.create(
        merchant_id=merchant.id,
        item_id=item.id,
        price_points=10,
        stock=1,
        starts_at=datetime.now(UTC) - timedelta(hours=2),
        ends_at=datetime.now(UTC) - timedelta(hours=1),
    )
    late = await buy(client, merchant, member, ended.id, "k")
    assert late.status == 409 and (await late.json())["error"]["message"] == "秒杀已结束"
    assert (await buy(client, merchant, member, 999_999, "k")).status == 404
    assert await MallOrder.all().count() == 0
    assert (await PointsAccount.get(member_id=member.id)).balance == 1_000


async def test_concurrent_attempts_sell_exactly_the_stock(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant)
    sale = await new_sale(client, merchant, item, stock=7, limit=2)
    members = await buyers(merchant, 12)
    attempts = [buy(client, merchant, m, sale["id"], f"k{n}") for m in members for n in range(4)]
    responses = await asyncio.gather(*attempts)
    statuses = [r.status for r in responses]
    assert statuses.count(200) == 7 and set(statuses) == {200, 409}
    orders = Counter(await MallOrder.filter(flash_sale_id=sale["id"]).values_list("member_id", flat=True))
    assert sum(orders.values()) == 7 and max(orders.values()) <= 2
    assert (await FlashSale.get(id=sale["id"])).sold == 7
    assert await left_in_redis(client, sale["id"]) == 0
    assert await audit_points() == []


async def test_a_failed_order_returns_its_reservation(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant)
    sale = await new_sale(client, merchant, item, stock=1, price=400)
    poor, rich = await buyers(merchant, 2, points_each=0)
    await give_points(merchant, rich, 1_000)
    await give_points(merchant, poor, 100)
    short = await buy(client, merchant, poor, sale["id"], "k")
    assert short.status == 409 and (await short.json())["error"]["code"] == "insufficient_points"
    assert await left_in_redis(client, sale["id"]) == 1  # the unit went back
    await give_points(merchant, poor, 300)
    assert (await buy(client, merchant, poor, sale["id"], "k")).status == 200  # same key, now enough
    sold_out = await buy(client, merchant, rich, sale["id"], "k")
    assert sold_out.status == 409 and (await sold_out.json())["error"]["message"] == "已抢光"
    assert (await PointsAccount.get(member_id=poor.id)).balance == 0
    assert await audit_points() == []


async def test_redis_flushed_mid_sale_is_rebuilt_from_the_database(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant)
    sale = await new_sale(client, merchant, item, stock=4, limit=1)
    members = await buyers(merchant, 5)
    for n, member in enumerate(members[:2]):
        assert (await buy(client, merchant, member, sale["id"], f"k{n}")).status == 200
    await client.app[REDIS].flushdb()  # Redis restarted empty: scripts and keys are gone
    replay = await buy(client, merchant, members[0], sale["id"], "k0")
    assert replay.status == 200 and (await replay.json())["replayed"] is True
    assert await left_in_redis(client, sale["id"]) == 2
    assert (await buy(client, merchant, members[1], sale["id"], "again")).status == 409  # limit remembered
    results = await asyncio.gather(*(buy(client, merchant, m, sale["id"], "x") for m in members[2:]))
    assert sorted(r.status for r in results) == [200, 200, 409]
    assert (await FlashSale.get(id=sale["id"])).sold == 4
    assert await MallOrder.filter(flash_sale_id=sale["id"]).count() == 4
    assert await audit_points() == []


async def test_the_database_refuses_a_unit_redis_wrongly_has(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant)
    sale = await new_sale(client, merchant, item, stock=1)
    first, second = await buyers(merchant, 2)
    assert (await buy(client, merchant, first, sale["id"], "k")).status == 200
    await client.app[REDIS].set(flash.gate_keys(sale["id"])[0], 3)  # a stale count after a bad rebuild
    refused = await buy(client, merchant, second, sale["id"], "k")
    assert refused.status == 409 and (await refused.json())["error"]["message"] == "已抢光"
    assert await left_in_redis(client, sale["id"]) == 2  # that phantom unit was dropped, not given back
    assert await MallOrder.filter(flash_sale_id=sale["id"]).count() == 1
    assert (await PointsAccount.get(member_id=second.id)).balance == 1_000


async def test_a_cancelled_flash_order_frees_the_member_not_the_sale(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=10)
    sale = await new_sale(client, merchant, item, stock=2, limit=1)
    [member] = await buyers(merchant, 1)
    order = await (await buy(client, merchant, member, sale["id"], "k")).json()
    await return_order(order["order_id"], reason="cancel", now=datetime.now(UTC), actor="test")
    assert (await MallItem.get(id=item.id)).stock == 9  # the unit went back to the item
    await client.app[REDIS].flushdb()
    assert (await buy(client, merchant, member, sale["id"], "k2")).status == 200
    assert await left_in_redis(client, sale["id"]) == 0
    assert (await MallOrder.get(id=order["order_id"])).status == OrderStatus.CANCELLED
    assert await audit_points() == []


async def one_bought(client: TestClient) -> tuple[Merchant, Member, dict[str, Any], dict[str, Any]]:
    """A sale of 3 units, limit 1, and one member's order of it (key "k")."""
    merchant = await make_merchant()
    item = await make_item(merchant, stock=10)
    sale = await new_sale(client, merchant, item, stock=3, limit=1)
    [member] = await buyers(merchant, 1)
    order = await (await buy(client, merchant, member, sale["id"], "k")).json()
    return merchant, member, sale, order


async def cancel(client: TestClient, merchant: Merchant, member: Member, order: dict[str, Any]) -> None:
    headers = await member_headers(client, merchant, member)
    cancelled = await client.post(
        f"/api/mp/{merchant.slug}/mall/orders/{order['order_id']}/cancel", headers=headers
    )
    assert cancelled.status == 200, await cancelled.text()


async def test_a_member_who_cancels_may_buy_again_at_once(client: TestClient) -> None:
    merchant, member, sale, order = await one_bought(client)
    assert (await buy(client, merchant, member, sale["id"], "k2")).status == 409  # the limit holds
    await cancel(client, merchant, member, order)
    assert (await buy(client, merchant, member, sale["id"], "k3")).status == 200  # no rebuild needed
    assert await audit_points() == []


async def test_a_pickup_the_expiry_job_returned_frees_the_members_place(client: TestClient) -> None:
    """The job returns overdue pick-ups without touching Redis; the member's next attempt finds the gate
    still counting the order, checks the database, frees the place and buys."""
    merchant, member, sale, order = await one_bought(client)
    assert (await buy(client, merchant, member, sale["id"], "k2")).status == 409  # the limit holds
    overdue = datetime.now(UTC) - timedelta(minutes=1)
    await MallOrder.filter(id=order["order_id"]).update(pickup_deadline=overdue)
    assert await expire_pickups(datetime.now(UTC)) == {"expired_orders": 1}
    again = await buy(client, merchant, member, sale["id"], "k3")
    assert again.status == 200, await again.text()
    assert await left_in_redis(client, sale["id"]) == 1  # the expired unit went to the item, not the sale
    assert await MallOrder.filter(flash_sale_id=sale["id"], member_id=member.id).count() == 2
    for flushed in (False, True):  # a retry of the expired order's key replays it, also after a rebuild
        if flushed:
            await client.app[REDIS].flushdb()
        retry = await buy(client, merchant, member, sale["id"], "k")
        assert retry.status == 200 and (await retry.json())["order_id"] == order["order_id"]
        assert await left_in_redis(client, sale["id"]) == 1
    assert await audit_points() == []


async def test_retrying_a_cancelled_orders_key_replays_it_and_takes_no_unit(client: TestClient) -> None:
    merchant, member, sale, order = await one_bought(client)
    await cancel(client, merchant, member, order)
    retry = await buy(client, merchant, member, sale["id"], "k")
    assert retry.status == 200 and (await retry.json())["order_id"] == order["order_id"]
    assert await left_in_redis(client, sale["id"]) == 2  # the retry took no unit
    assert (await buy(client, merchant, member, sale["id"], "k2")).status == 200  # and holds no place
    assert await audit_points() == []


async def test_a_unit_goes_back_even_when_its_reservation_was_freed_meanwhile(client: TestClient) -> None:
    """A retry of a returned order takes a unit while the member's next attempt frees the returned
    orders' places (without their units): giving the retry's unit back must still restore it."""
    redis = client.app[REDIS]
    keys = flash.gate_keys(990)
    now = int(datetime.now(UTC).timestamp() * 1000)
    await flash.run_gate(redis, keys, "load", 5, 3600, f"{now - 60_000} {now + 3_600_000} 5", 0)
    assert await flash.run_gate(redis, keys, "take", 7, 1, "r", now) == "taken"
    assert await flash.release(redis, 990, 7, "r", give_back=False) == "released"  # freed meanwhile
    await flash._give_back(redis, 990, 7, "r", taken=True)
    assert int(await redis.get(keys[0])) == 5
    assert await flash.run_gate(redis, keys, "take", 7, 1, "s", now) == "taken"  # and the place is free


async def _known_sale(client: TestClient, stock: int = 5) -> tuple[Merchant, dict[str, Any], list[Member]]:
    """A live sale this process has read (one unit bought), so attempts take the one-call path."""
    merchant = await make_merchant()
    sale = await new_sale(client, merchant, await make_item(merchant), stock=stock)
    members = await buyers(merchant, 3)
    assert (await buy(client, merchant, members[0], sale["id"], "first")).status == 200
    return merchant, sale, members


async def test_the_one_call_gate_refuses_callers_without_a_member_session(client: TestClient) -> None:
    merchant, sale, _ = await _known_sale(client)
    url = f"/api/mp/{merchant.slug}/mall/flash-sales/{sale['id']}/buy"
    staff = await staff_headers(client, merchant, "cashier", username="till1")
    for headers in ({}, {"Authorization": "Bearer nope"}, staff):
        refused = await client.post(url, json={"idempotency_key": "k"}, headers=headers)
        assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
        # a body the endpoint would refuse is still answered 401 to a caller who is not signed in
        bad = await client.post(url, json={"idempotency_key": "k", "extra": 1}, headers=headers)
        assert bad.status == 401
    assert await left_in_redis(client, sale["id"]) == 4
    assert await MallOrder.filter(flash_sale_id=sale["id"]).count() == 1


async def test_the_one_call_gate_gives_back_a_unit_taken_under_another_merchants_url(
    client: TestClient,
) -> None:
    merchant, sale, members = await _known_sale(client)
    other = await make_merchant("other")
    headers = await member_headers(client, merchant, members[1])
    wrong = f"/api/mp/{other.slug}/mall/flash-sales/{sale['id']}/buy"
    refused = await client.post(wrong, json={"idempotency_key": "k"}, headers=headers)
    assert refused.status == 401 and (await refused.json())["error"]["message"] == "登录凭证不属于该商户"
    assert await left_in_redis(client, sale["id"]) == 4  # the unit the gate took went back
    stranger = await make_member(other, openid="o-stranger")
    await give_points(other, stranger, 1_000)
    foreign = await buy(client, other, stranger, sale["id"], "k")  # another merchant's sale: not found
    assert foreign.status == 404
    assert (await buy(client, merchant, members[1], sale["id"], "k")).status == 200  # its place is free
    assert await left_in_redis(client, sale["id"]) == 3
    assert await MallOrder.filter(flash_sale_id=sale["id"]).count() == 2
    assert await audit_points() == []


async def test_the_one_call_gate_answers_sold_out_limit_and_retries(client: TestClient) -> None:
    merchant, sale, members = await _known_sale(client, stock=2)
    first = await (await buy(client, merchant, members[0], sale["id"], "first")).json()
    assert first["replayed"] is True  # a retry replays through the one call too
    assert (await buy(client, merchant, members[0], sale["id"], "again")).status == 409  # limit 1
    assert (await buy(client, merchant, members[1], sale["id"], "k")).status == 200
    sold_out = await buy(client, merchant, members[2], sale["id"], "k")
    assert sold_out.status == 409 and (await sold_out.json())["error"]["message"] == "已抢光"
    assert await left_in_redis(client, sale["id"]) == 0
    assert (await FlashSale.get(id=sale["id"])).sold == 2
