"""Searching the members in the back office: each filter, each sort, keyset pages under concurrent
inserts, bad input, roles; and the trigger-kept last visit and lifetime spend it filters and sorts by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient

from handlers.directory import search
from handlers.loyalty import checkin, ledger
from handlers.staff.accounts import create_staff
from handlers.till import purchase as purchases
from handlers.till import refund as refunds
from models.checkin import Checkin
from models.loyalty import MemberTier
from models.member import Member
from models.merchant import Merchant, Store
from models.points import PointsKind
from models.purchase import Purchase
from tests.support.factories import EFFECTS, make_member, make_merchant, staff_headers

SHANGHAI = 8  # hours ahead of UTC


def local(day: str, hour: int = 12) -> datetime:
    """A Shanghai wall-clock time as an aware UTC instant."""
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC) - timedelta(hours=SHANGHAI)


@dataclass
class Seeded:
    shop: Merchant
    main: Store
    east: Store
    by_name: dict[str, Member]

    def codes(self, *names: str) -> list[str]:
        return [self.by_name[name].code for name in names]


async def member_with(shop: Merchant, openid: str, **fields: Any) -> Member:
    """A member whose trigger-kept and registration columns are set as given."""
    kept = {k: fields.pop(k) for k in ("registered_at", "last_visit_at", "lifetime_spend_fen") if k in fields}
    member = await make_member(shop, openid=openid, **fields)
    if kept:
        await Member.filter(id=member.id).update(**kept)
    return await Member.get(id=member.id)


async def seed(shop: Merchant) -> Seeded:
    """Five listed members (and two that never are): known names, phones, tiers, stores and dates."""
    main = await Store.get(merchant_id=shop.id, code="main")
    east = await Store.create(merchant_id=shop.id, code="east", name="东区店")
    people = {
        "zhangsan": dict(
            name="张三", phone="13800000001", gender="male", birthday=date(1990, 5, 20),
            registered_at=local("2024-01-10", 9), last_visit_at=local("2024-06-01", 18),
            lifetime_spend_fen=12_345, store_id=main.id, points=300,
        ),
        "zhangwei": dict(
            name="张伟", phone="13800000002", external_id="VIP-0007", registered_at=local("2024-02-15"),
            last_visit_at=local("2024-05-01"), lifetime_spend_fen=50_000, store_id=east.id,
            tier="silver", points=1_200,
        ),
        "lisi": dict(
            name="李四", phone="13800000003", registered_at=local("2024-03-01"),
            lifetime_spend_fen=0, blocked_at=local("2024-04-01"), blocked_reason="测试", points=0,
        ),
        "zhangli": dict(
            name="Zhang Li", phone="13800000004", registered_at=local("2024-03-20"),
            last_visit_at=local("2024-06-01", 10), lifetime_spend_fen=50_000, tier="gold", points=50,
        ),
        "percent": dict(
            name="100%纯", phone=None, registered_at=local("2024-03-31", 23), lifetime_spend_fen=1,
            last_visit_at=local("2024-04-30", 23), points=7,
        ),
    }  # fmt: skip
    by_name: dict[str, Member] = {}
    for n, (key, fields) in enumerate(people.items()):
        points, tier = fields.pop("points"), fields.pop("tier", None)
        member = await member_with(shop, f"o-{key}", **fields)
        if points:
            await ledger.credit(
                shop.id,
                member.id,
                points,
                PointsKind.GRANT,
                key=f"seed:{n}",
                now=local("2024-01-01"),
                expires_at=None,
            )
        if tier:
            await MemberTier.create(
                merchant_id=shop.id, member_id=member.id, tier_code=tier, since=local("2024-04-01")
            )
        by_name[key] = member
    erased = await member_with(
        shop, "o-erased", name="张删除", phone="13800000009", registered_at=local("2024-02-01")
    )
    await Member.filter(id=erased.id).update(anonymized_at=local("2024-05-01"))
    other = await make_merchant("other")
    await member_with(
        other, "o-elsewhere", name="张别家", phone="13800000001", registered_at=local("2024-02-01")
    )
    return Seeded(shop, main, east, by_name)


@pytest.fixture
async def seeded(client: TestClient) -> Seeded:
    return await seed(await make_merchant())


@pytest.fixture
async def admin(client: TestClient, seeded: Seeded) -> dict[str, str]:
    """An admin sees every store's members (a manager only their store's: see the scope test)."""
    return await staff_headers(client, seeded.shop, "admin")


async def codes(client: TestClient, headers: dict[str, str], **query: Any) -> list[str]:
    response = await client.get(f"/api/admin/members?{urlencode(query)}", headers=headers)
    assert response.status == 200, await response.text()
    return [item["code"] for item in (await response.json())["items"]]


async def error(client: TestClient, headers: dict[str, str], **query: Any) -> dict[str, Any]:
    response = await client.get(f"/api/admin/members?{urlencode(query)}", headers=headers)
    assert response.status == 400, await response.text()
    return dict((await response.json())["error"])


async def test_each_filter_finds_exactly_its_members(
    client: TestClient, seeded: Seeded, admin: dict[str, str]
) -> None:
    s = seeded
    expected: list[tuple[dict[str, Any], list[str]]] = [
        ({}, ["percent", "zhangli", "lisi", "zhangwei", "zhangsan"]),
        ({"code": s.by_name["lisi"].code.lower()}, ["lisi"]),
        ({"external_id": "VIP-0007"}, ["zhangwei"]),
        ({"external_id": "vip-0007"}, []),  # as written
        ({"phone": "+86 138-0000-0002"}, ["zhangwei"]),
        ({"phone": "13800000001"}, ["zhangsan"]),  # not the other merchant's, nor an erased one
        ({"name": "张"}, ["zhangwei", "zhangsan"]),
        ({"name": "zhang"}, ["zhangli"]),
        ({"name_contains": "li"}, ["zhangli"]),
        ({"name_contains": "%"}, ["percent"]),  # a literal %, not a wildcard
        ({"name_contains": "三"}, ["zhangsan"]),
        ({"tier": "normal"}, ["percent", "lisi", "zhangsan"]),  # never changed tier: the first one
        ({"tier": "silver"}, ["zhangwei"]),
        ({"tier": "gold"}, ["zhangli"]),
        ({"tier": "diamond"}, []),
        ({"store_id": s.east.id}, ["zhangwei"]),
        ({"store_id": s.main.id}, ["zhangsan"]),
        ({"registered_from": "2024-02-15", "registered_to": "2024-03-20"}, ["zhangli", "lisi", "zhangwei"]),
        (
            {"registered_to": "2024-03-31"},
            ["percent", "zhangli", "lisi", "zhangwei", "zhangsan"],
        ),  # 23:00 local
        ({"registered_from": "2024-04-01"}, []),
        ({"visited_from": "2024-05-01"}, ["zhangli", "zhangwei", "zhangsan"]),
        ({"visited_to": "2024-04-30"}, ["percent"]),  # never visited: no last visit in any range
        ({"visited_from": "2024-06-01", "visited_to": "2024-06-01"}, ["zhangli", "zhangsan"]),
        ({"blocked": "true"}, ["lisi"]),
        ({"blocked": "false", "tier": "normal"}, ["percent", "zhangsan"]),
        ({"name": "张", "store_id": s.east.id, "tier": "silver"}, ["zhangwei"]),
    ]
    for query, names in expected:
        assert await codes(client, admin, **query) == s.codes(*names), query


async def test_rows_show_the_member_with_the_phone_masked(
    client: TestClient, seeded: Seeded, admin: dict[str, str]
) -> None:
    response = await client.get("/api/admin/members?phone=13800000001", headers=admin)
    [row] = (await response.json())["items"]
    assert row == {
        "id": seeded.by_name["zhangsan"].id,
        "code": seeded.by_name["zhangsan"].code,
        "external_id": None,
        "name": "张三",
        "phone": "138****0001",
        "gender": "male",
        "birthday": "1990-05-20",
        "tier_code": "normal",
        "tier_name": "普通会员",
        "points": 300,
        "lifetime_spend_fen": 12_345,
        "registered_at": "2024-01-10T01:00:00Z",
        "last_visit_at": "2024-06-01T10:00:00Z",
        "source": "oa_subscribe",
        "subscribed": True,
        "blocked": False,
        "store_id": seeded.main.id,
        "store_code": "main",
        "store_name": "总店",
    }


async def test_each_sort_in_both_directions(
    client: TestClient, seeded: Seeded, admin: dict[str, str]
) -> None:
    orders = {
        "registered_at": ["zhangsan", "zhangwei", "lisi", "zhangli", "percent"],
        # Never visited counts as the oldest; equal visits… none here: 10:00 local before 18:00 local.
        "last_visit": ["lisi", "percent", "zhangwei", "zhangli", "zhangsan"],
        "points": ["lisi", "percent", "zhangli", "zhangsan", "zhangwei"],
        # Equal spends are ordered by member id.
        "lifetime_spend": ["lisi", "percent", "zhangsan", "zhangwei", "zhangli"],
    }
    for sort, names in orders.items():
        assert await codes(client, admin, sort=sort, order="asc") == seeded.codes(*names), sort
        assert await codes(client, admin, sort=sort, order="desc") == seeded.codes(*reversed(names)), sort


async def pages(
    client: TestClient, headers: dict[str, str], between: Any = None, **query: Any
) -> tuple[list[str], int]:
    """Every page of a search (limit 2), calling `between(n)` after page n; the codes and page count."""
    found: list[str] = []
    cursor: str | None = None
    count = 0
    while True:
        params = {**query, "limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/api/admin/members?{urlencode(params)}", headers=headers)
        assert response.status == 200, await response.text()
        body = await response.json()
        found += [item["code"] for item in body["items"]]
        count += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return found, count
        if between is not None:
            await between(count)


async def test_keyset_pages_neither_repeat_nor_skip_under_concurrent_inserts(
    client: TestClient, seeded: Seeded, admin: dict[str, str]
) -> None:
    shop = seeded.shop
    behind: list[Member] = []  # inserted where the pages already are: never seen
    ahead: list[Member] = []  # inserted where the pages have not come yet: seen once, in order

    async def newest_and_oldest(page: int) -> None:
        newest = local("2025-01-01") + timedelta(days=page)
        behind.append(await member_with(shop, f"o-newest-{page}", registered_at=newest))
        oldest = local("2023-12-31") - timedelta(days=page)
        ahead.append(await member_with(shop, f"o-oldest-{page}", registered_at=oldest))

    found, count = await pages(client, admin, newest_and_oldest, sort="registered_at", order="desc")
    assert count == 4
    newest_first = seeded.codes("percent", "zhangli", "lisi", "zhangwei", "zhangsan")
    assert found == newest_first + [member.code for member in ahead]
    assert not {member.code for member in behind} & set(found)

    behind.clear()
    ahead.clear()

    async def thrifty_and_lavish(page: int) -> None:
        when = local("2024-06-01")
        behind.append(await member_with(shop, f"o-thrifty-{page}", registered_at=when, lifetime_spend_fen=0))
        spend = 99_999 + page
        ahead.append(
            await member_with(shop, f"o-lavish-{page}", registered_at=when, lifetime_spend_fen=spend)
        )

    in_2024 = {"registered_from": "2024-01-01", "registered_to": "2024-12-31"}
    found, count = await pages(
        client, admin, thrifty_and_lavish, sort="lifetime_spend", order="asc", **in_2024
    )
    assert count == 4
    cheapest_first = seeded.codes("lisi", "percent", "zhangsan", "zhangwei", "zhangli")
    assert found == cheapest_first + [member.code for member in ahead]


async def test_a_search_pages_in_batches_of_keyset_queries(seeded: Seeded) -> None:
    found = await search.plan(seeded.shop, search.Filters(), sort="points", direction="desc")
    batches = [[row.code for row in batch] async for batch in search.batches(found, size=2)]
    assert batches == [
        seeded.codes("zhangwei", "zhangsan"),
        seeded.codes("zhangli", "percent"),
        seeded.codes("lisi"),
    ]


async def test_bad_input_is_a_400_naming_the_field(
    client: TestClient, seeded: Seeded, admin: dict[str, str]
) -> None:
    phone = await error(client, admin, phone="12345")
    assert phone == {
        "code": "validation_error",
        "message": "手机号格式不正确，请输入 11 位中国大陆手机号",
        "field": "phone",
    }
    assert (await error(client, admin, tier="platinum"))["field"] == "tier"
    assert (await error(client, admin, store_id=999))["field"] == "store_id"
    other_store = await Store.create(merchant_id=(await make_merchant("third")).id, code="x", name="别家店")
    assert (await error(client, admin, store_id=other_store.id))["field"] == "store_id"
    late = await error(client, admin, registered_from="2024-05-01", registered_to="2024-04-01")
    assert late["field"] == "registered_from"
    assert (await error(client, admin, visited_from="2024-13-01"))["field"] == "visited_from"
    assert (await error(client, admin, sort="name"))["field"] == "sort"
    assert (await error(client, admin, limit=0))["field"] == "limit"
    assert (await error(client, admin, cursor="not-a-cursor"))["field"] == "cursor"
    assert (await error(client, admin, surname="张"))["field"] == "surname"
    first = await client.get("/api/admin/members?limit=1&sort=points", headers=admin)
    cursor = (await first.json())["next_cursor"]
    mismatch = await error(client, admin, cursor=cursor, sort="registered_at")
    assert mismatch["field"] == "cursor" and "排序" in mismatch["message"]


async def test_only_managers_and_admins_search(
    client: TestClient, seeded: Seeded, admin: dict[str, str]
) -> None:
    cashier = await staff_headers(client, seeded.shop, "cashier")
    assert (await client.get("/api/admin/members")).status == 401
    assert (await client.get("/api/admin/members", headers=cashier)).status == 403
    assert len(await codes(client, admin)) == 5


async def test_a_manager_searches_the_members_of_their_own_store_only(
    client: TestClient, seeded: Seeded, admin: dict[str, str]
) -> None:
    manager = await staff_headers(client, seeded.shop, "manager")  # of "main"
    assert await codes(client, manager) == seeded.codes("zhangsan")
    assert await codes(client, manager, store_id=seeded.main.id) == seeded.codes("zhangsan")
    assert await codes(client, manager, name="张") == seeded.codes("zhangsan")
    elsewhere = await client.get(f"/api/admin/members?store_id={seeded.east.id}", headers=manager)
    assert elsewhere.status == 403
    assert (await elsewhere.json())["error"] == {
        "code": "forbidden",
        "message": "只能查看本门店的数据",
        "field": "store_id",
    }
    east = await create_staff(
        seeded.shop, store_code="east", username="east-manager", role="manager", password="east-password-1"
    )
    login = await client.post(
        "/api/staff/login",
        json={"merchant": seeded.shop.slug, "username": east.username, "password": "east-password-1"},
    )
    east_headers = {"Authorization": f"Bearer {(await login.json())['token']}"}
    assert await codes(client, east_headers) == seeded.codes("zhangwei")
    assert len(await codes(client, admin, store_id=seeded.east.id)) == 1


async def test_last_visit_and_lifetime_spend_follow_purchases_refunds_and_check_ins(
    client: TestClient,
) -> None:
    shop = await make_merchant()
    member = await member_with(shop, "o-visitor", registered_at=local("2024-01-01"))
    assert (member.last_visit_at, member.lifetime_spend_fen) == (None, 0)
    first = await purchases.record_purchase(
        shop,
        None,
        purchases.PurchaseRequest("a", member.id, 10_000),
        now=local("2024-05-01"),
        effects=EFFECTS,
    )
    second = await purchases.record_purchase(
        shop, None, purchases.PurchaseRequest("b", member.id, 2_500), now=local("2024-05-02"), effects=EFFECTS
    )
    stored = await Member.get(id=member.id)
    last = await Purchase.get(id=second.purchase_id)
    assert (stored.last_visit_at, stored.lifetime_spend_fen) == (last.created_at, 12_500)
    await refunds.refund_purchase(
        shop, None, first.purchase_id, key="r", now=local("2024-05-03"), effects=EFFECTS
    )
    await refunds.refund_purchase(
        shop, None, first.purchase_id, key="r", now=local("2024-05-03"), effects=EFFECTS
    )
    stored = await Member.get(id=member.id)
    assert (stored.last_visit_at, stored.lifetime_spend_fen) == (
        last.created_at,
        2_500,
    )  # a refund is no visit
    now = datetime.now(UTC)
    await ledger.credit(shop.id, member.id, 20, PointsKind.GRANT, key="makeup", now=now, expires_at=None)
    await checkin.make_up(
        shop, member.id, (now + timedelta(hours=SHANGHAI)).date() - timedelta(days=1), now=now
    )
    assert (await Member.get(id=member.id)).last_visit_at == last.created_at  # a make-up is no visit
    await checkin.check_in(shop, member.id, now=now, effects=EFFECTS)
    today = await Checkin.get(member_id=member.id, makeup=False)
    assert (await Member.get(id=member.id)).last_visit_at == today.created_at


async def test_the_search_and_the_export_are_documented(client: TestClient) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    search_op = doc["paths"]["/api/admin/members"]["get"]
    parameters = {p["name"]: p for p in search_op["parameters"]}
    assert {"code", "phone", "name", "name_contains", "tier", "store_id", "cursor", "limit", "sort"} <= set(
        parameters
    )
    assert parameters["sort"]["schema"]["enum"] == ["registered_at", "last_visit", "points", "lifetime_spend"]
    assert parameters["registered_from"]["schema"] == {"type": "string", "format": "date"}
    assert all(p["in"] == "query" and not p["required"] for p in parameters.values())
    export_op = doc["paths"]["/api/admin/members/export"]["get"]
    assert set(export_op["responses"]["200"]["content"]) == {
        "text/csv; charset=utf-8",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    }
    assert {"403", "400", "401"} <= set(export_op["responses"])
    assert "full_phone" in {p["name"] for p in export_op["parameters"]}
