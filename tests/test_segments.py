"""Segments: AND / OR / NOT nesting over tags and attributes compiles to one parameterised WHERE that
selects exactly the expected members; validation errors name the path; the public audience interface
(count, keyset batches, load_expression); the preview endpoint (count, masked sample); CRUD and roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.core.errors import NotFound, ValidationError
from handlers.segments import audience, expression
from models.loyalty import AuditLog, MemberTier
from models.member import Member
from models.merchant import Merchant
from models.tag import MemberTag, Tag
from tests.support.factories import make_member, make_merchant, staff_headers


@dataclass
class World:
    shop: Merchant
    by_name: dict[str, Member]
    vip: Tag
    new: Tag

    def names(self, ids: list[int]) -> set[str]:
        lookup = {m.id: n for n, m in self.by_name.items()}
        return {lookup[i] for i in ids}


async def build(shop: Merchant) -> World:
    now = datetime.now(UTC)
    people: dict[str, dict[str, Any]] = {
        "ann": dict(gender="female", phone="13800000001", name="安娜", lifetime_spend_fen=50_000,
                    last_visit_at=now - timedelta(days=70), birthday=date(1990, 3, 1)),
        "bob": dict(gender="male", phone="13800000002", name="鲍勃", lifetime_spend_fen=5_000,
                    last_visit_at=now - timedelta(days=3)),
        "cat": dict(gender="female", name="凯特", lifetime_spend_fen=0, subscribed=False),
        "dan": dict(gender="male", phone="13800000004", lifetime_spend_fen=200_000,
                    last_visit_at=now - timedelta(days=100), birthday=date(1990, 3, 20)),
        "eve": dict(gender="female", phone="13800000005", lifetime_spend_fen=80_000),
    }  # fmt: skip
    by_name = {}
    for name, fields in people.items():
        kept = {
            k: fields.pop(k) for k in ("lifetime_spend_fen", "last_visit_at", "subscribed") if k in fields
        }
        member = await make_member(shop, openid=f"o-{name}", **fields)
        await Member.filter(id=member.id).update(**kept)
        by_name[name] = member
    erased = await make_member(shop, openid="o-erased", gender="female")
    await Member.filter(id=erased.id).update(anonymized_at=now)
    vip = await Tag.create(merchant_id=shop.id, name="VIP")
    new = await Tag.create(merchant_id=shop.id, name="新品")
    for tag, names in ((vip, ["ann", "dan"]), (new, ["ann", "bob", "cat"])):
        for name in names:
            await MemberTag.create(tag_id=tag.id, member_id=by_name[name].id, added_at=now)
    await MemberTag.create(tag_id=vip.id, member_id=erased.id, added_at=now)
    await MemberTier.create(merchant_id=shop.id, member_id=by_name["eve"].id, tier_code="gold", since=now)
    return World(shop, by_name, vip, new)


@pytest.fixture
async def world(client: TestClient) -> World:
    return await build(await make_merchant())


def female() -> dict[str, Any]:
    return {"attr": "gender", "op": "eq", "value": "female"}


async def selected(world: World, expr: dict[str, Any]) -> set[str]:
    ids = [i for batch in [b async for b in audience.iter_member_ids(world.shop.id, expr)] for i in batch]
    assert ids == sorted(ids)
    assert await audience.count(world.shop.id, expr) == len(ids)
    return world.names(ids)


def cases(world: World) -> list[tuple[dict[str, Any], set[str]]]:
    vip, new = {"tag": world.vip.id}, {"tag": world.new.id}
    not_blocked = {"attr": "blocked", "op": "eq", "value": False}
    return [
        (vip, {"ann", "dan"}),  # the erased member holds it too, and is never selected
        ({"not": vip}, {"bob", "cat", "eve"}),
        ({"and": [vip, new]}, {"ann"}),
        ({"or": [vip, new]}, {"ann", "bob", "cat", "dan"}),
        ({"and": [female(), {"not": vip}]}, {"cat", "eve"}),
        ({"or": [{"and": [vip, {"not": new}]}, {"and": [new, {"not": female()}]}]}, {"dan", "bob"}),
        ({"not": {"or": [vip, {"not": {"and": [new, female()]}}]}}, {"cat"}),
        ({"attr": "gender", "op": "in", "value": ["male", "female"]}, {"ann", "bob", "cat", "dan", "eve"}),
        ({"attr": "lifetime_spend_fen", "op": "between", "value": [5_000, 80_000]}, {"ann", "bob", "eve"}),
        ({"attr": "last_visit_days", "op": "gte", "value": 60}, {"ann", "dan"}),
        ({"attr": "last_visit_days", "op": "lte", "value": 7}, {"bob"}),
        ({"attr": "tier", "op": "eq", "value": "normal"}, {"ann", "bob", "cat", "dan"}),
        ({"attr": "tier", "op": "in", "value": ["gold"]}, {"eve"}),
        ({"attr": "points", "op": "lte", "value": 0}, {"ann", "bob", "cat", "dan", "eve"}),
        ({"attr": "has_phone", "op": "eq", "value": False}, {"cat"}),
        ({"attr": "subscribed", "op": "eq", "value": False}, {"cat"}),
        ({"attr": "birthday_month", "op": "eq", "value": 3}, {"ann", "dan"}),
        ({"not": {"attr": "birthday_month", "op": "eq", "value": 3}}, {"bob", "cat", "eve"}),  # no birthday
        ({"attr": "registered_days", "op": "lte", "value": 1}, {"ann", "bob", "cat", "dan", "eve"}),
        ({"and": [{"attr": "age", "op": "gte", "value": 30}, not_blocked]}, {"ann", "dan"}),
    ]  # fmt: skip


async def test_expressions_select_exactly(world: World) -> None:
    for expr, expected in cases(world):
        assert await selected(world, expr) == expected, expr


async def test_the_where_clause_binds_every_value(world: World) -> None:
    hostile = "female'); DROP TABLE member; --"
    expr = {"and": [{"attr": "gender", "op": "in", "value": [hostile]}, {"tag": world.vip.id}]}
    with pytest.raises(ValidationError):  # not a gender: refused before any SQL
        await audience.count(world.shop.id, expr)
    compiled = await audience.compile_for(world.shop.id, {"attr": "tier", "op": "eq", "value": "gold"})
    assert "gold" not in compiled.where and "gold" in compiled.params.values()
    assert compiled.tiers and not compiled.points
    either = {"or": [{"tag": world.vip.id}, female(), {"tag": world.new.id}]}
    compiled = await audience.compile_for(world.shop.id, either)
    assert compiled.where.count("f.tags") == 1 and "f.tags && " in compiled.where  # one test of both tags
    assert sorted([world.vip.id, world.new.id]) in compiled.params.values()
    assert await selected(world, either) == {"ann", "bob", "cat", "dan", "eve"}
    both = {"and": [{"tag": world.new.id}, female(), {"tag": world.vip.id}]}
    compiled = await audience.compile_for(world.shop.id, both)
    assert compiled.where.count("f.tags") == 1 and "f.tags @> " in compiled.where
    assert await selected(world, both) == {"ann"}
    assert await selected(world, {"and": [{"tag": world.new.id}, {"tag": world.vip.id}]}) == {"ann"}
    foreign = await Tag.create(merchant_id=(await make_merchant("elsewhere")).id, name="别家")
    with pytest.raises(ValidationError):
        await audience.count(world.shop.id, {"or": [{"tag": world.vip.id}, {"tag": foreign.id}]})


async def test_keyset_batches(world: World) -> None:
    everyone = {"attr": "blocked", "op": "eq", "value": False}
    batches = [b async for b in audience.iter_member_ids(world.shop.id, everyone, batch=2)]
    assert [len(b) for b in batches] == [2, 2, 1]
    flat = [i for b in batches for i in b]
    assert flat == sorted(m.id for m in world.by_name.values())
    exact = [b async for b in audience.iter_member_ids(world.shop.id, {"tag": world.vip.id}, batch=2)]
    assert [len(b) for b in exact] == [2]
    with pytest.raises(ValidationError):
        _ = [b async for b in audience.iter_member_ids(world.shop.id, everyone, batch=0)]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "expression"),
        ({"and": []}, "expression.and"),
        ({"and": [{"tag": 1}, {"or": [{"tag": "x"}]}]}, "expression.and[1].or[0].tag"),
        ({"not": {"attr": "gender", "op": "gte", "value": 1}}, "expression.not.op"),
        ({"attr": "height", "op": "eq", "value": 1}, "expression.attr"),
        ({"attr": "points", "op": "between", "value": [9, 1]}, "expression.value"),
        ({"attr": "birthday_month", "op": "in", "value": [1, 13]}, "expression.value[1]"),
        ({"attr": "subscribed", "op": "eq", "value": "yes"}, "expression.value"),
        ({"tag": 1, "not": {"tag": 2}}, "expression"),
        ({"xor": [{"tag": 1}]}, "expression.xor"),
        (
            {"not": {"not": {"not": {"not": {"not": {"not": {"tag": 1}}}}}}},
            "expression.not.not.not.not.not.not",
        ),
    ],
)
def test_shape_errors_name_the_path(raw: Any, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        expression.parse(raw)
    assert caught.value.field == field
    assert field in caught.value.message


async def test_references_are_checked_against_the_merchant(world: World) -> None:
    other = await make_merchant("other")
    foreign = await Tag.create(merchant_id=other.id, name="别家")
    for expr in (
        {"tag": foreign.id},
        {"attr": "tier", "op": "eq", "value": "platinum"},
        {"attr": "store_id", "op": "in", "value": [999_999]},
        {"attr": "acquired_by", "op": "eq", "value": 999_999},
    ):
        with pytest.raises(ValidationError):
            await audience.count(world.shop.id, expr)
    with pytest.raises(NotFound):
        await audience.load_expression(world.shop.id, 999_999)


async def test_preview_endpoint_counts_and_masks(client: TestClient, world: World) -> None:
    manager = await staff_headers(client, world.shop, "manager")
    body = {"expression": {"and": [female(), {"tag": world.new.id}]}, "sample": 5}
    response = await client.post("/api/admin/segments/preview", json=body, headers=manager)
    assert response.status == 200, await response.text()
    preview = await response.json()
    assert preview["count"] == 2
    assert [(s["name"], s["phone"]) for s in preview["sample"]] == [("安*", "138****0001"), ("凯*", "")]
    assert preview["sample"][0]["code"] == world.by_name["ann"].code
    bad = await client.post("/api/admin/segments/preview", json={"expression": {"tag": 0}}, headers=manager)
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "expression.tag"
    both = await client.post(
        "/api/admin/segments/preview", json={"expression": {"tag": 1}, "segment_id": 1}, headers=manager
    )
    assert both.status == 400


async def test_segment_crud_roles_and_audit(client: TestClient, world: World) -> None:
    manager = await staff_headers(client, world.shop, "manager")
    body = {"name": "女性VIP", "expression": {"and": [{"tag": world.vip.id}, female()]}}
    response = await client.post("/api/admin/segments", json=body, headers=manager)
    assert response.status == 201, await response.text()
    segment = await response.json()
    assert segment["expression"] == body["expression"] and segment["sync_status"] == ""
    again = await client.post("/api/admin/segments", json=body, headers=manager)
    assert again.status == 409
    expr = await audience.load_expression(world.shop.id, segment["id"])
    assert await audience.count(world.shop.id, expr) == 1
    preview = await client.post(
        "/api/admin/segments/preview", json={"segment_id": segment["id"]}, headers=manager
    )
    assert (await preview.json())["count"] == 1
    patch = {"expression": {"or": [{"tag": world.vip.id}, female()]}}
    response = await client.patch(f"/api/admin/segments/{segment['id']}", json=patch, headers=manager)
    assert response.status == 200 and (await response.json())["expression"] == patch["expression"]
    bad = await client.patch(
        f"/api/admin/segments/{segment['id']}", json={"expression": {"tag": 999_999}}, headers=manager
    )
    assert bad.status == 400
    listed = await (await client.get("/api/admin/segments", headers=manager)).json()
    assert [s["name"] for s in listed["items"]] == ["女性VIP"]
    cashier = await staff_headers(client, world.shop, "cashier")
    assert (await client.get("/api/admin/segments", headers=cashier)).status == 403
    assert (await client.delete(f"/api/admin/segments/{segment['id']}", headers=manager)).status == 403
    admin = await staff_headers(client, world.shop, "admin")
    assert (await client.delete(f"/api/admin/segments/{segment['id']}", headers=admin)).status == 204
    assert (await client.get(f"/api/admin/segments/{segment['id']}", headers=manager)).status == 404
    actions = await AuditLog.filter(merchant_id=world.shop.id).order_by("id").values_list("action", flat=True)
    assert actions == ["segment.create", "segment.update", "segment.delete"]
