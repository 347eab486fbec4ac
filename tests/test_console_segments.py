"""Console page of segments over HTTP: the builder's live count, saving, and the tag filter of the
member search and the member page."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient

from handlers.tags import assign, catalogue
from models.member import Member
from models.merchant import Merchant
from models.staff import Staff
from models.tag import Segment, Tag
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import EFFECTS, make_member, make_merchant


@pytest.fixture
async def shop(client: TestClient) -> tuple[Merchant, int]:
    """Three members, two of them female, one of those tagged 尝鲜."""
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    alice = await Staff.get(username="alice")
    for key, gender in (("a", "female"), ("b", "female"), ("c", "male")):
        await make_member(
            merchant, f"o-{key}", name=f"会员{key}", gender=gender, phone=f"1390000000{ord(key) % 10}"
        )
    now = datetime.now(UTC)
    tag = await catalogue.create_tag(merchant.id, "尝鲜", None, actor="test", effects=EFFECTS)
    first = await Member.get(name="会员a")
    await assign.change_one(merchant.id, tag.id, first.id, "add", staff_id=alice.id, now=now)
    assert (await login(client, "shop", "alice")).status == 303
    return merchant, tag.id


def builder(**rows: str) -> dict[str, str]:
    return {"name": "", "mode": "and", "advanced": "", **rows}


async def count(client: TestClient, data: dict[str, str]) -> str:
    token = await page_csrf(client, "/admin/segments")
    response = await client.post(
        "/admin/segments/preview", data=data, headers={"X-CSRF-Token": token, "HX-Request": "true"}
    )
    assert response.status == 200
    return await response.text()


async def test_the_count_follows_the_conditions(client: TestClient, shop: tuple[Merchant, int]) -> None:
    _, tag_id = shop
    female = builder(c0_field="gender", c0_op="in", c0_value="female")
    assert 'data-value="audience">2<' in await count(client, female)
    tagged = {**female, "c1_field": f"tag:{tag_id}", "c1_op": "has"}
    assert 'data-value="audience">1<' in await count(client, tagged)
    untagged = {**female, "c1_field": f"tag:{tag_id}", "c1_op": "not"}
    assert 'data-value="audience">1<' in await count(client, untagged)
    either = {**tagged, "mode": "or"}
    assert 'data-value="audience">2<' in await count(client, either)
    bad = builder(c0_field="points", c0_op="gte", c0_value="lots")
    assert 'data-field="audience-form"' in await count(client, bad)
    advanced = builder(advanced=json.dumps({"attr": "gender", "op": "eq", "value": "male"}))
    assert 'data-value="audience">1<' in await count(client, advanced)


async def test_save_a_segment(client: TestClient, shop: tuple[Merchant, int]) -> None:
    merchant, tag_id = shop
    token = await page_csrf(client, "/admin/segments")
    data = {**builder(c0_field=f"tag:{tag_id}", c0_op="has"), "csrf_token": token}
    unnamed = await client.post("/admin/segments", data=data)
    assert unnamed.status == 400 and 'data-field="name"' in await unnamed.text()
    saved = await client.post("/admin/segments", data={**data, "name": "尝鲜会员"}, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    segment = await Segment.get(merchant_id=merchant.id)
    assert (segment.name, segment.expression) == ("尝鲜会员", {"and": [{"tag": tag_id}]})
    assert "尝鲜会员" in await (await client.get("/admin/segments")).text()


async def test_search_by_tag_and_the_tags_on_the_member_page(
    client: TestClient, shop: tuple[Merchant, int]
) -> None:
    _, tag_id = shop
    html = await (await client.get(f"/admin/members?tag_id={tag_id}")).text()
    first = await Member.get(name="会员a")
    assert first.code in html and "会员b" not in html
    page = await (await client.get(f"/admin/members/{first.id}")).text()
    assert '<span class="pill">尝鲜</span>' in page


async def test_tags_created_and_applied_on_the_member_page(
    client: TestClient, shop: tuple[Merchant, int]
) -> None:
    merchant, _ = shop
    token = await page_csrf(client, "/admin/tags")
    bad = await client.post(
        "/admin/tags", data={"csrf_token": token, "name": "高价值", "rule": '{"type": "nope"}'}
    )
    assert bad.status == 400
    text = await bad.text()
    assert 'data-field="rule"' in text and 'value="高价值"' in text
    made = await client.post(
        "/admin/tags", data={"csrf_token": token, "name": "回头客", "rule": ""}, allow_redirects=False
    )
    assert made.status == 303, await made.text()
    tag = await Tag.get(merchant_id=merchant.id, name="回头客")
    second = await Member.get(name="会员b")
    applied = await client.post(
        f"/admin/members/{second.id}/tags",
        data={"csrf_token": token, "tag_id": str(tag.id)},
        allow_redirects=False,
    )
    assert applied.status == 303
    page = await (await client.get(f"/admin/members/{second.id}?done=tag")).text()
    assert '<span class="pill">回头客</span>' in page and "标签已更新" in page
    await client.post(
        f"/admin/members/{second.id}/tags",
        data={"csrf_token": token, "tag_id": str(tag.id), "remove": "true"},
    )
    page = await (await client.get(f"/admin/members/{second.id}")).text()
    assert '<span class="pill">回头客</span>' not in page
    html = await (await client.get("/admin/tags")).text()
    assert "回头客" in html and "尝鲜" in html
