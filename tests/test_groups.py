"""Group deals (拼团) over HTTP: starting, joining, filling, the last seat, expiry refunds exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from handlers.loyalty.ledger_audit import audit_points
from handlers.mall import groups
from models.mall import DealGroup, GroupDeal, GroupStatus, MallItem, MallOrder, OrderStatus, StockMovement
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount
from tests.support.factories import EFFECTS, make_merchant, staff_headers
from tests.test_flash import buyers, make_item, member_headers, window


async def new_deal(
    client: TestClient,
    merchant: Merchant,
    item: MallItem,
    *,
    size: int = 3,
    hours: int = 24,
    price: int = 200,
    times: dict[str, str] | None = None,
) -> dict[str, Any]:
    headers = await staff_headers(client, merchant, "manager", username=f"deal{item.id}")
    body = {
        "item_id": item.id,
        "price_points": price,
        "group_size": size,
        "hours": hours,
        **(times or window()),
    }
    response = await client.post("/api/admin/mall/group-deals", json=body, headers=headers)
    assert response.status == 201, await response.text()
    deal: dict[str, Any] = await response.json()
    return deal


async def start(client: TestClient, merchant: Merchant, member: Member, deal_id: int, key: str = "s") -> Any:
    headers = await member_headers(client, merchant, member)
    return await client.post(
        f"/api/mp/{merchant.slug}/mall/group-deals/{deal_id}/groups",
        json={"idempotency_key": key},
        headers=headers,
    )


async def join(client: TestClient, merchant: Merchant, member: Member, group_id: int, key: str = "j") -> Any:
    headers = await member_headers(client, merchant, member)
    return await client.post(
        f"/api/mp/{merchant.slug}/mall/groups/{group_id}/join", json={"idempotency_key": key}, headers=headers
    )


async def test_admin_creates_and_lists_deals_with_validation_and_roles(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant)
    deal = await new_deal(client, merchant, item, size=2, hours=12)
    assert (deal["group_size"], deal["hours"], deal["state"], deal["active"]) == (2, 12, "live", True)
    manager = await staff_headers(client, merchant, "manager", username="mgr2")
    cashier = await staff_headers(client, merchant, "cashier")
    url = "/api/admin/mall/group-deals"
    body = {"item_id": item.id, "price_points": 100, "group_size": 3, "hours": 24, **window()}
    assert (await client.post(url, json=body, headers=cashier)).status == 403
    assert (await client.post(url, json={**body, "group_size": 1}, headers=manager)).status == 400
    assert (await client.post(url, json={**body, "hours": 0}, headers=manager)).status == 400
    assert (await client.post(url, json={**body, "item_id": 424242}, headers=manager)).status == 404
    backwards = {**body, "starts_at": body["ends_at"], "ends_at": body["starts_at"]}
    assert (await client.post(url, json=backwards, headers=manager)).status == 400
    listed = await (await client.get(url, headers=manager)).json()
    assert [d["id"] for d in listed["items"]] == [deal["id"]]
    assert await GroupDeal.all().count() == 1


async def test_a_group_fills_and_everyone_gets_a_pickup_code(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=10)
    deal = await new_deal(client, merchant, item, size=3, price=200)
    leader, second, third, late = await buyers(merchant, 4)
    started = await start(client, merchant, leader, deal["id"])
    assert started.status == 200, await started.text()
    body = await started.json()
    group_id = body["group"]["id"]
    assert (body["status"], body["pickup_code"], body["group"]["joined"]) == ("pending_group", None, 1)
    assert 0 < body["group"]["seconds_left"] <= 24 * 3600
    assert (await PointsAccount.get(member_id=leader.id)).balance == 800  # taken at join
    assert (await MallItem.get(id=item.id)).stock == 9
    assert (await start(client, merchant, leader, deal["id"])).status == 200  # retry: the same group
    assert await DealGroup.all().count() == 1

    assert (await (await join(client, merchant, second, group_id)).json())["group"]["status"] == "open"
    assert (await join(client, merchant, second, group_id, "other")).status == 409  # already in it
    filled = await (await join(client, merchant, third, group_id)).json()
    assert filled["group"]["status"] == "filled" and filled["group"]["seconds_left"] == 0
    assert [m["leader"] for m in filled["group"]["members"]] == [True, False, False]
    orders = await MallOrder.filter(group_id=group_id).order_by("id")
    assert [o.status for o in orders] == [OrderStatus.AWAITING_PICKUP] * 3
    assert all(o.pickup_code for o in orders) and len({o.pickup_code for o in orders}) == 3
    full = await join(client, merchant, late, group_id)
    assert full.status == 409 and "满员" in (await full.json())["error"]["message"]
    replay = await join(client, merchant, third, group_id)
    assert (await replay.json())["replayed"] is True
    viewed = await client.get(
        f"/api/mp/{merchant.slug}/mall/groups/{group_id}",
        headers=await member_headers(client, merchant, late),
    )
    assert (await viewed.json())["joined"] == 3
    assert await audit_points() == []


async def test_concurrent_joins_for_the_last_seat_have_one_winner(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=20)
    deal = await new_deal(client, merchant, item, size=2)
    leader, *rivals = await buyers(merchant, 7)
    group_id = (await (await start(client, merchant, leader, deal["id"])).json())["group"]["id"]
    responses = await asyncio.gather(*(join(client, merchant, m, group_id) for m in rivals))
    assert sorted(r.status for r in responses) == [200] + [409] * 5
    group = await DealGroup.get(id=group_id)
    assert (group.status, group.joined) == (GroupStatus.FILLED, 2)
    assert await MallOrder.filter(group_id=group_id).count() == 2
    assert (await MallItem.get(id=item.id)).stock == 18
    assert sum([(await PointsAccount.get(member_id=m.id)).balance for m in rivals]) == 6 * 1_000 - 200
    assert await audit_points() == []


async def test_an_expired_group_fails_and_refunds_exactly_once(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=5)
    deal = await new_deal(client, merchant, item, size=3, hours=2, price=300)
    leader, second, third = await buyers(merchant, 3)
    group_id = (await (await start(client, merchant, leader, deal["id"])).json())["group"]["id"]
    assert (await join(client, merchant, second, group_id)).status == 200
    assert (await MallItem.get(id=item.id)).stock == 3

    now = datetime.now(UTC)
    assert await groups.expire_groups(now + timedelta(hours=1), EFFECTS) == {
        "failed_groups": 0,
        "refunded_orders": 0,
    }
    after = now + timedelta(hours=2, minutes=1)
    assert await groups.expire_groups(after, EFFECTS) == {"failed_groups": 1, "refunded_orders": 2}
    assert await groups.expire_groups(after, EFFECTS) == {"failed_groups": 0, "refunded_orders": 0}
    group = await DealGroup.get(id=group_id)
    assert group.status == GroupStatus.FAILED
    orders = await MallOrder.filter(group_id=group_id)
    assert {o.status for o in orders} == {OrderStatus.GROUP_FAILED}
    for member in (leader, second):
        assert (await PointsAccount.get(member_id=member.id)).balance == 1_000
    assert (await MallItem.get(id=item.id)).stock == 5
    assert await StockMovement.filter(item_id=item.id, reason="group_refund").count() == 2
    refused = await join(client, merchant, third, group_id)
    assert refused.status == 409 and "过期" in (await refused.json())["error"]["message"]
    assert await audit_points() == []


async def test_outside_the_deal_window_nobody_starts_a_group(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant)
    deal = await new_deal(client, merchant, item, times=window(starts_in=timedelta(hours=3)))
    [member] = await buyers(merchant, 1)
    early = await start(client, merchant, member, deal["id"])
    assert early.status == 409 and (await early.json())["error"]["message"] == "拼团活动尚未开始"
    assert (await start(client, merchant, member, 777_777)).status == 404
    assert await DealGroup.all().count() == 0 and await MallOrder.all().count() == 0
