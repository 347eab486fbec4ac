"""Changing a group deal (拼团) or ending it early: open groups fail and refund exactly once, filled
groups keep their orders, nobody starts or joins a group afterwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from handlers.loyalty.ledger_audit import audit_points
from handlers.mall import groups
from models.loyalty import AuditLog
from models.mall import DealGroup, GroupDeal, GroupStatus, MallItem, MallOrder, OrderStatus, StockMovement
from models.points import PointsAccount
from tests.support.factories import EFFECTS, make_merchant, staff_headers
from tests.test_flash import buyers, make_item, window
from tests.test_flash_edit import admin, error_of, later
from tests.test_groups import join, new_deal, start


async def edit(client: TestClient, headers: dict[str, str], deal_id: int, **changes: Any) -> Any:
    return await client.patch(f"/api/admin/mall/group-deals/{deal_id}", json=changes, headers=headers)


async def end(client: TestClient, headers: dict[str, str], deal_id: int) -> Any:
    return await client.post(f"/api/admin/mall/group-deals/{deal_id}/end", headers=headers)


async def test_ending_a_deal_refunds_its_open_groups_once(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=10)
    deal = await new_deal(client, merchant, item, size=2, price=300)
    a, b, c, d = await buyers(merchant, 4)
    open_group = (await (await start(client, merchant, a, deal["id"])).json())["group"]["id"]
    filled = (await (await start(client, merchant, b, deal["id"])).json())["group"]["id"]
    assert (await join(client, merchant, c, filled)).status == 200
    assert (await MallItem.get(id=item.id)).stock == 7
    headers = await admin(client, merchant)

    response = await end(client, headers, deal["id"])
    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["state"], body["active"], body["failed_groups"], body["refunded_orders"]) == (
        "ended",
        False,
        1,
        1,
    )
    assert (await DealGroup.get(id=open_group)).status == GroupStatus.FAILED
    assert (await DealGroup.get(id=filled)).status == GroupStatus.FILLED
    assert (await MallOrder.get(group_id=open_group)).status == OrderStatus.GROUP_FAILED
    assert (await PointsAccount.get(member_id=a.id)).balance == 1_000
    assert (await PointsAccount.get(member_id=b.id)).balance == 700
    assert (await MallItem.get(id=item.id)).stock == 8

    # Exactly once: a second end is refused, the expiry job finds nothing left to refund.
    assert (await end(client, headers, deal["id"])).status == 409
    far = datetime.now(UTC) + timedelta(days=40)
    assert await groups.expire_groups(far, EFFECTS) == {"failed_groups": 0, "refunded_orders": 0}
    assert await StockMovement.filter(item_id=item.id, reason="group_refund").count() == 1
    assert (await PointsAccount.get(member_id=a.id)).balance == 1_000

    late_join = await join(client, merchant, d, open_group)
    assert late_join.status == 409
    late_start = await start(client, merchant, d, deal["id"])
    assert await error_of(late_start) == (409, "group_deal", "拼团活动已结束")
    assert await MallOrder.filter(member_id=d.id).count() == 0
    [entry] = await AuditLog.filter(action="group_deal.end")
    assert entry.detail["open_groups"] == 1 and entry.subject == f"group_deal:{deal['id']}"
    assert await audit_points() == []


async def test_an_open_group_the_end_missed_is_refunded_by_the_expiry_job(client: TestClient) -> None:
    """The end sets the open groups' expiry in its own transaction, so a failure before they are
    refunded leaves them to the expiry job (once)."""
    merchant = await make_merchant()
    item = await make_item(merchant, stock=5)
    deal = await new_deal(client, merchant, item, size=3, price=200)
    [leader] = await buyers(merchant, 1)
    group_id = (await (await start(client, merchant, leader, deal["id"])).json())["group"]["id"]
    now = datetime.now(UTC)

    async def nothing(ids: list[int], at: datetime, effects: Any) -> dict[str, int]:
        return {"failed_groups": 0, "refunded_orders": 0}

    real = groups._fail_groups
    groups._fail_groups = nothing  # type: ignore[assignment]
    try:
        await groups.end_deal(merchant.id, deal["id"], now=now, actor="test", effects=EFFECTS)
    finally:
        groups._fail_groups = real  # type: ignore[assignment]
    assert (await DealGroup.get(id=group_id)).status == GroupStatus.OPEN
    assert await groups.expire_groups(datetime.now(UTC), EFFECTS) == {
        "failed_groups": 1,
        "refunded_orders": 1,
    }
    assert await groups.expire_groups(datetime.now(UTC), EFFECTS) == {
        "failed_groups": 0,
        "refunded_orders": 0,
    }
    assert (await PointsAccount.get(member_id=leader.id)).balance == 1_000


async def test_edits_before_and_after_the_start(client: TestClient) -> None:
    merchant = await make_merchant()
    item = await make_item(merchant, stock=10)
    deal = await new_deal(client, merchant, item, size=3, price=300, times=window(timedelta(hours=2)))
    headers = await admin(client, merchant)
    changed = await edit(
        client, headers, deal["id"], price_points=150, group_size=2, hours=6, starts_at=later(-1)
    )
    assert changed.status == 200, await changed.text()
    assert (await changed.json())["state"] == "live"
    a, b = await buyers(merchant, 2)
    started = await (await start(client, merchant, a, deal["id"])).json()
    assert started["points"] == 150 and started["group"]["group_size"] == 2
    assert (await join(client, merchant, b, started["group"]["id"])).status == 200
    assert (await DealGroup.get(id=started["group"]["id"])).status == GroupStatus.FILLED

    before = await GroupDeal.get(id=deal["id"])
    for changes, field in (
        (dict(price_points=100), "price_points"),
        (dict(group_size=4), "group_size"),
        (dict(hours=1), "hours"),
    ):
        assert (await error_of(await edit(client, headers, deal["id"], **changes)))[:2] == (409, field)
    assert (await error_of(await edit(client, headers, deal["id"], ends_at=later(-5))))[:2] == (
        400,
        "ends_at",
    )
    manager = await staff_headers(client, merchant, "manager", username="mgr-deal")
    assert (await edit(client, manager, deal["id"], ends_at=later(600))).status == 403
    after = await GroupDeal.get(id=deal["id"])
    fields = ("price_points", "group_size", "hours", "starts_at", "ends_at", "active")
    assert [getattr(after, n) for n in fields] == [getattr(before, n) for n in fields]

    moved = await edit(client, headers, deal["id"], ends_at=later(600))
    assert moved.status == 200
    assert await AuditLog.filter(action="group_deal.update").count() == 2
