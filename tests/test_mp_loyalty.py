from __future__ import annotations

import base64
import io
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from defusedxml import ElementTree as ET
from PIL import Image

from handlers.loyalty import ledger
from handlers.loyalty.ledger_audit import audit_points
from handlers.members import member_qr
from handlers.rules.calendar import local_day
from handlers.rules.tiers_model import Benefits
from handlers.staff.sessions import SessionKind, SessionStore
from models.loyalty import MemberTier
from models.member import Member
from models.merchant import Merchant
from models.points import PointsKind, PointsTransaction
from tests.support.factories import make_member, make_merchant
from webhooks.appkeys import REDIS, RUNTIME

ENDPOINTS = [
    ("GET", "points"),
    ("GET", "points/ledger"),
    ("POST", "checkin"),
    ("POST", "checkin/makeup"),
    ("GET", "checkin/calendar"),
    ("GET", "card"),
    ("GET", "tier"),
]


async def login(client: TestClient, shop: Merchant, member: Member) -> dict[str, str]:
    issued = await SessionStore(client.app[REDIS]).issue(SessionKind.MEMBER, shop.id, member.id)
    return {"Authorization": f"Bearer {issued.token}"}


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def member(shop: Merchant) -> Member:
    member = await make_member(shop)
    await Member.filter(id=member.id).update(registered_at=datetime.now(UTC) - timedelta(days=60))
    return await Member.get(id=member.id)


@pytest.fixture
async def auth(client: TestClient, shop: Merchant, member: Member) -> dict[str, str]:
    return await login(client, shop, member)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_needs_the_members_own_merchant_session(
    client: TestClient, shop: Merchant, member: Member, method: str, path: str
) -> None:
    url = f"/api/mp/shop/{path}"
    response = await client.request(method, url, json={"day": "2030-01-01"})
    assert response.status == 401 and (await response.json())["error"]["code"] == "unauthorized"
    other = await make_merchant("other")
    stranger = await make_member(other, openid="o-stranger")
    response = await client.request(
        method, url, headers=await login(client, other, stranger), json={"day": "2030-01-01"}
    )
    assert response.status == 401


async def test_check_in_then_already_checked_in(
    client: TestClient, auth: dict[str, str], member: Member
) -> None:
    first = await client.post("/api/mp/shop/checkin", headers=auth)
    assert first.status == 200
    body = await first.json()
    assert (body["already_checked_in"], body["points"], body["streak"], body["balance"]) == (False, 5, 1, 5)
    assert body["next_reward"] == {"days": 6, "streak": 7, "points": 50} and "5 积分" in body["message"]
    second = await (await client.post("/api/mp/shop/checkin", headers=auth)).json()
    assert (second["already_checked_in"], second["points"], second["balance"]) == (True, 0, 5)
    assert "已经签到" in second["message"]
    assert await PointsTransaction.filter(member_id=member.id).count() == 1
    assert await audit_points() == []


async def test_points_summary_and_ledger_pages(
    client: TestClient, auth: dict[str, str], shop: Merchant, member: Member
) -> None:
    now = datetime.now(UTC)
    for n in range(3):
        await ledger.credit(
            shop.id,
            member.id,
            10 + n,
            PointsKind.GRANT,
            key=f"g{n}",
            now=now,
            expires_at=now + timedelta(days=10 + n * 30),
            reason="活动赠送",
        )
    summary = await (await client.get("/api/mp/shop/points", headers=auth)).json()
    assert (summary["balance"], summary["pending"], summary["lifetime_earned"]) == (33, 0, 33)
    expected_first = local_day(now + timedelta(days=10), shop.timezone).isoformat()
    assert summary["expiring_soon"] == {"points": 10, "first_date": expected_first}
    page = await (await client.get("/api/mp/shop/points/ledger?limit=2", headers=auth)).json()
    assert [i["delta"] for i in page["items"]] == [12, 11]
    assert page["items"][0]["kind"] == "grant" and page["items"][0]["kind_label"] == "赠送积分"
    rest = await client.get(f"/api/mp/shop/points/ledger?limit=2&cursor={page['next_cursor']}", headers=auth)
    assert [i["delta"] for i in (await rest.json())["items"]] == [10]
    for bad in ("limit=0", "limit=abc", "cursor=-1", "limit=1000"):
        response = await client.get(f"/api/mp/shop/points/ledger?{bad}", headers=auth)
        assert response.status == 400, bad
        assert (await response.json())["error"]["field"] == bad.split("=")[0]
    assert await audit_points() == []


async def test_make_up_yesterday_and_refusals(
    client: TestClient, auth: dict[str, str], shop: Merchant, member: Member
) -> None:
    today = local_day(datetime.now(UTC), shop.timezone)
    yesterday = (today - timedelta(days=1)).isoformat()
    poor = await client.post("/api/mp/shop/checkin/makeup", headers=auth, json={"day": yesterday})
    assert poor.status == 409
    error = (await poor.json())["error"]
    assert error["code"] == "insufficient_points" and "补签需要 20 积分" in error["message"]
    await ledger.credit(
        shop.id, member.id, 50, PointsKind.GRANT, key="g", now=datetime.now(UTC), expires_at=None
    )
    made = await client.post("/api/mp/shop/checkin/makeup", headers=auth, json={"day": yesterday})
    assert made.status == 200
    assert await made.json() == {
        "day": yesterday,
        "streak": 1,
        "current_streak": 1,
        "cost": 20,
        "balance": 30,
    }
    checked = await (await client.post("/api/mp/shop/checkin", headers=auth)).json()
    assert checked["streak"] == 2
    again = await client.post("/api/mp/shop/checkin/makeup", headers=auth, json={"day": yesterday})
    assert again.status == 409 and (await again.json())["error"]["code"] == "conflict"
    far = (today - timedelta(days=10)).isoformat()
    too_far = await client.post("/api/mp/shop/checkin/makeup", headers=auth, json={"day": far})
    assert too_far.status == 400 and "最近 3 天" in (await too_far.json())["error"]["message"]
    for body in ({"day": "not-a-day"}, {}, {"day": yesterday, "extra": 1}):
        response = await client.post("/api/mp/shop/checkin/makeup", headers=auth, json=body)
        assert response.status == 400
    assert await audit_points() == []


async def test_calendar_this_month_and_a_chosen_month(
    client: TestClient, auth: dict[str, str], shop: Merchant
) -> None:
    await client.post("/api/mp/shop/checkin", headers=auth)
    today = local_day(datetime.now(UTC), shop.timezone)
    body = await (await client.get("/api/mp/shop/checkin/calendar", headers=auth)).json()
    assert body["month"] == f"{today.year:04d}-{today.month:02d}"
    day = next(d for d in body["days"] if d["today"])
    assert day["checked"] and day["day"] == today.isoformat() and not day["makeup"]
    assert (body["streak"], body["checked_today"], body["makeup_cost"]) == (1, True, 20)
    other = await (await client.get("/api/mp/shop/checkin/calendar?month=2031-02", headers=auth)).json()
    assert other["month"] == "2031-02" and len(other["days"]) == 28
    assert all(d["future"] and not d["checked"] for d in other["days"])
    for bad in ("2031-13", "31-02", "2031-2", "x"):
        response = await client.get(f"/api/mp/shop/checkin/calendar?month={bad}", headers=auth)
        assert response.status == 400 and (await response.json())["error"]["field"] == "month"


async def test_card_qr_resolves_at_the_till(
    client: TestClient, auth: dict[str, str], shop: Merchant, member: Member
) -> None:
    body = await (await client.get("/api/mp/shop/card", headers=auth)).json()
    assert body["member_code"] == member.code and 60 < body["expires_in"] <= 120
    assert 0 < body["refresh_in"] <= 60
    found = await member_qr.resolve_scan(
        shop, body["token"], secret=client.app[RUNTIME].secret, now=datetime.now(UTC)
    )
    assert found.id == member.id
    png = base64.b64decode(body["png"].removeprefix("data:image/png;base64,"))
    Image.open(io.BytesIO(png)).verify()
    assert ET.fromstring(body["svg"]).tag.endswith("svg")


async def test_tier_shows_benefits_and_progress(client: TestClient, auth: dict[str, str]) -> None:
    body = await (await client.get("/api/mp/shop/tier", headers=auth)).json()
    assert (body["code"], body["name"], body["rank"]) == ("normal", "普通会员", 0)
    assert body["next_tier"] == "银卡" and "银卡" in body["progress"] and "1000 元" in body["progress"]
    assert body["benefits"]["lines"] == [] and body["benefits"]["points_multiplier"] == "1"
    assert [t["code"] for t in body["purchasable"]] == ["gold"]


async def test_openapi_documents_the_loyalty_endpoints(client: TestClient) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    for method, path in ENDPOINTS:
        operation = doc["paths"][f"/api/mp/{{merchant_slug}}/{path}"][method.lower()]
        assert operation["security"] == [{"memberSession": []}] and "401" in operation["responses"]
    assert "CardOut" in doc["components"]["schemas"] and "TierOut" in doc["components"]["schemas"]


def test_benefit_lines() -> None:
    lines = member_qr.benefit_lines(
        Benefits(
            discount_percent=95,
            points_multiplier=Fraction(3, 2),
            birthday_gift_points=300,
            upgrade_gift_points=200,
        )
    )
    assert lines == ["消费享 9.5 折", "消费积分 1.5 倍", "生日礼 300 积分", "升级礼 200 积分"]
    assert (
        member_qr.multiplier_text(Fraction(6, 5)) == "1.2" and member_qr.multiplier_text(Fraction(2)) == "2"
    )


async def test_tier_of_a_member_with_gold(client: TestClient, auth: dict[str, str], member: Member) -> None:
    await MemberTier.create(
        merchant_id=member.merchant_id, member_id=member.id, tier_code="gold", since=datetime.now(UTC)
    )
    body: dict[str, Any] = await (await client.get("/api/mp/shop/tier", headers=auth)).json()
    assert (body["name"], body["next_tier"]) == ("金卡", "钻石")
    assert body["benefits"]["lines"][:2] == ["消费享 9.5 折", "消费积分 1.5 倍"]


async def test_member_buys_a_tier_upgrade_with_points_once(
    client: TestClient, shop: Merchant, member: Member, auth: dict[str, str]
) -> None:
    await ledger.credit(
        shop.id, member.id, 5_500, PointsKind.GRANT, key="seed", now=datetime.now(UTC), expires_at=None
    )
    body = {"tier": "gold", "idempotency_key": "buy-1"}
    first = await client.post("/api/mp/shop/tier/upgrade", json=body, headers=auth)
    assert first.status == 200, await first.text()
    assert await first.json() == {
        "from_code": "normal",
        "to_code": "gold",
        "to_name": "金卡",
        "gift_points": 200,
    }
    retry = await client.post("/api/mp/shop/tier/upgrade", json=body, headers=auth)
    assert retry.status == 200
    again = await client.post(
        "/api/mp/shop/tier/upgrade", json={"tier": "gold", "idempotency_key": "buy-2"}, headers=auth
    )
    assert again.status == 409
    summary = await client.get("/api/mp/shop/points", headers=auth)
    assert (await summary.json())["balance"] == 5_500 - 5_000 + 200
    assert await audit_points() == []


async def test_buying_a_tier_without_enough_points_changes_nothing(
    client: TestClient, shop: Merchant, member: Member, auth: dict[str, str]
) -> None:
    response = await client.post(
        "/api/mp/shop/tier/upgrade", json={"tier": "gold", "idempotency_key": "k"}, headers=auth
    )
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "insufficient_points"
    assert await MemberTier.filter(member_id=member.id, tier_code="gold").count() == 0
