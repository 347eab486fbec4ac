"""The tags API: create (manual, automatic), apply and remove one member, bulk CSV/XLSX files with a
report and all-or-nothing, history, roles, audit log, and validation errors naming the field."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import openpyxl
import pytest
from aiohttp.test_utils import TestClient

from handlers.members import retention
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant
from models.tag import MemberTag, MemberTagHistory, Tag
from tests.support.factories import make_member, make_merchant, staff_headers
from webhooks.appkeys import BACKGROUND, EFFECTS


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def manager(client: TestClient, shop: Merchant) -> dict[str, str]:
    return await staff_headers(client, shop, "manager")


async def post(client: TestClient, path: str, headers: dict[str, str], body: Any, status: int = 200) -> Any:
    response = await client.post(path, json=body, headers=headers)
    assert response.status == status, await response.text()
    return await response.json()


async def new_tag(client: TestClient, headers: dict[str, str], name: str, rule: Any = None) -> dict[str, Any]:
    body = {"name": name} if rule is None else {"name": name, "rule": rule}
    return await post(client, "/api/admin/tags", headers, body, 201)  # type: ignore[no-any-return]


def upload(content: bytes, filename: str = "名单.csv", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", content, filename=filename, content_type="application/octet-stream")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


def xlsx(rows: list[list[Any]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def holders(tag_id: int) -> set[int]:
    return set(await MemberTag.filter(tag_id=tag_id).values_list("member_id", flat=True))  # type: ignore[arg-type]


async def test_apply_and_remove_one_member_with_history_and_audit(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    member = await make_member(shop)
    tag = await new_tag(client, manager, "新品尝鲜")
    assert tag["kind"] == "manual" and tag["rule"] is None and tag["member_count"] == 0
    path = f"/api/admin/tags/{tag['id']}/members"
    assert await post(client, path, manager, {"member_id": member.id}) == {"changed": True}
    assert await post(client, path, manager, {"member_id": member.id}) == {"changed": False}
    assert await holders(tag["id"]) == {member.id}
    response = await client.get(f"/api/admin/tags/{tag['id']}", headers=manager)
    assert (await response.json())["member_count"] == 1
    response = await client.delete(f"{path}/{member.id}", headers=manager)
    assert response.status == 200 and await response.json() == {"changed": True}
    response = await client.delete(f"{path}/{member.id}", headers=manager)
    assert await response.json() == {"changed": False}
    view = await (await client.get(f"/api/admin/members/{member.id}/tags", headers=manager)).json()
    assert view["tags"] == []
    assert [(h["change"], h["reason"], h["tag_name"]) for h in view["history"]] == [
        ("removed", "manual", "新品尝鲜"),
        ("added", "manual", "新品尝鲜"),
    ]
    assert all(h["staff_id"] is not None for h in view["history"])
    actions = await AuditLog.filter(merchant_id=shop.id).order_by("id").values_list("action", flat=True)
    assert actions == ["tag.create", "tag.add", "tag.remove"]


async def test_member_tags_lists_what_is_held(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    member = await make_member(shop, gender="female")
    manual = await new_tag(client, manager, "VIP")
    await post(client, f"/api/admin/tags/{manual['id']}/members", manager, {"member_id": member.id})
    auto = await new_tag(client, manager, "女性", {"type": "gender", "genders": ["female"]})
    assert auto["kind"] == "auto" and auto["recomputed_at"] is None  # computed in the background
    await client.app[BACKGROUND].drain()  # in-process Redis: the app's own run of it comes first
    await client.app[EFFECTS].run_due(datetime.now(UTC))
    auto = await (await client.get(f"/api/admin/tags/{auto['id']}", headers=manager)).json()
    assert auto["member_count"] == 1 and auto["recomputed_at"] is not None
    counts = await post(client, f"/api/admin/tags/{auto['id']}/recompute", manager, None)
    assert counts == {"members": 1, "added": 0, "removed": 0}
    audit = await AuditLog.filter(merchant_id=shop.id, action="tag.recompute").get()
    assert (audit.subject, audit.detail) == (f"tag:{auto['id']}", counts)
    view = await (await client.get(f"/api/admin/members/{member.id}/tags", headers=manager)).json()
    assert [(t["name"], t["kind"], t["added_by"] is None) for t in view["tags"]] == [
        ("VIP", "manual", False),
        ("女性", "auto", True),
    ]
    rule_row = next(h for h in view["history"] if h["tag_name"] == "女性")
    assert rule_row["reason"] == "rule" and rule_row["rule_version"] == 1 and rule_row["staff_id"] is None
    page = await (await client.get(f"/api/admin/members/{member.id}", headers=manager)).json()
    assert page["tags"] == ["VIP", "女性"]


async def test_an_automatic_tag_is_not_applied_by_hand(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    member = await make_member(shop)
    auto = await new_tag(client, manager, "积分多", {"type": "points", "min": 1000})
    body = await post(client, f"/api/admin/tags/{auto['id']}/members", manager, {"member_id": member.id}, 409)
    assert body["error"]["field"] == "tag_id"
    manual = await new_tag(client, manager, "手动")
    response = await client.patch(
        f"/api/admin/tags/{manual['id']}", json={"rule": {"type": "churn", "days": 30}}, headers=manager
    )
    assert response.status == 409


async def test_erased_unknown_and_other_merchants_members(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    tag = await new_tag(client, manager, "t")
    erased = await make_member(shop, openid="o-erased")
    await Member.filter(id=erased.id).update(anonymized_at=erased.registered_at)
    elsewhere = await make_member(await make_merchant("other"), openid="o-other")
    path = f"/api/admin/tags/{tag['id']}/members"
    assert (await post(client, path, manager, {"member_id": erased.id}, 409))["error"]["field"] == "member_id"
    assert (await post(client, path, manager, {"member_id": elsewhere.id}, 404))["error"][
        "code"
    ] == "member_not_found"
    other_tag = await Tag.create(merchant_id=elsewhere.merchant_id, name="别家")
    response = await client.post(
        f"/api/admin/tags/{other_tag.id}/members", json={"member_id": 1}, headers=manager
    )
    assert response.status == 404


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"type": "rfm", "window_days": 365, "segment": "好客户", "recency_days": 30, "frequency": 3,
          "monetary_fen": 1}, "rule.segment"),
        ({"type": "rfm", "window_days": 30, "segment": "重要价值客户", "recency_days": 60, "frequency": 3,
          "monetary_fen": 1}, "rule.recency_days"),
        ({"type": "tier", "tiers": ["platinum"]}, "rule.tiers[0]"),
        ({"type": "age"}, "rule.min_age"),
        ({"type": "age", "min_age": 30, "max_age": 20}, "rule.min_age"),
        ({"type": "birthday_month", "months": [13]}, "rule.months[0]"),
        ({"type": "churn", "days": 30, "extra": 1}, "rule.extra"),
        ({"type": "weather"}, "rule.type"),
        ({"type": "preference", "by": "brand", "values": ["x"], "window_days": 30}, "rule.by"),
    ],
)  # fmt: skip
async def test_a_bad_rule_is_a_400_naming_the_field(
    client: TestClient, manager: dict[str, str], rule: dict[str, Any], field: str
) -> None:
    body = await post(client, "/api/admin/tags", manager, {"name": "x", "rule": rule}, 400)
    assert body["error"]["field"] == field
    assert field in body["error"]["message"]


async def test_names_are_unique_and_roles_apply(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    await new_tag(client, manager, "重复")
    assert (await post(client, "/api/admin/tags", manager, {"name": " 重复 "}, 409))["error"][
        "field"
    ] == "name"
    cashier = await staff_headers(client, shop, "cashier")
    response = await client.post("/api/admin/tags", json={"name": "收银"}, headers=cashier)
    assert response.status == 403
    tag = await new_tag(client, manager, "删我")
    assert (await client.delete(f"/api/admin/tags/{tag['id']}", headers=manager)).status == 403
    admin = await staff_headers(client, shop, "admin")
    assert (await client.delete(f"/api/admin/tags/{tag['id']}", headers=admin)).status == 204


async def test_deleting_a_tag_records_removals_and_is_refused_while_a_segment_uses_it(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    admin = await staff_headers(client, shop, "admin")
    member = await make_member(shop)
    tag = await new_tag(client, manager, "将删除")
    await post(client, f"/api/admin/tags/{tag['id']}/members", manager, {"member_id": member.id})
    segment = await post(
        client,
        "/api/admin/segments",
        manager,
        {"name": "用它", "expression": {"not": {"tag": tag["id"]}}},
        201,
    )
    response = await client.delete(f"/api/admin/tags/{tag['id']}", headers=admin)
    assert response.status == 409
    assert "用它" in (await response.json())["error"]["message"]
    assert (await client.delete(f"/api/admin/segments/{segment['id']}", headers=admin)).status == 204
    assert (await client.delete(f"/api/admin/tags/{tag['id']}", headers=admin)).status == 204
    assert not await MemberTag.filter(member_id=member.id).exists()
    last = await MemberTagHistory.filter(member_id=member.id).order_by("-id").first()
    assert last is not None and (last.change, last.reason, last.tag_name) == (
        "removed",
        "tag_deleted",
        "将删除",
    )


async def test_bulk_csv_by_code_applies_all_at_once(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    members = [await make_member(shop, openid=f"o-{n}") for n in range(3)]
    tag = await new_tag(client, manager, "批量")
    await post(client, f"/api/admin/tags/{tag['id']}/members", manager, {"member_id": members[0].id})
    csv = "会员码\n" + "\n".join(m.code.lower() for m in members) + "\n\n"
    response = await client.post(
        f"/api/admin/tags/{tag['id']}/bulk", data=upload(csv.encode()), headers=manager
    )
    assert response.status == 200, await response.text()
    report = await response.json()
    assert report == {
        "action": "add", "column": "code", "rows": 3, "applied": True, "changed": 2, "unchanged": 1,
        "rejected": 0, "rejections": [],
    }  # fmt: skip
    assert await holders(tag["id"]) == {m.id for m in members}
    history = await MemberTagHistory.filter(tag_id=tag["id"], reason="bulk").count()
    assert history == 2
    assert (await Tag.get(id=tag["id"])).member_count == 3
    # Removing by the same file.
    form = upload(csv.encode(), action="remove")
    report = await (await client.post(f"/api/admin/tags/{tag['id']}/bulk", data=form, headers=manager)).json()
    assert (report["applied"], report["changed"]) == (True, 3)
    assert await holders(tag["id"]) == set()
    audit = await AuditLog.filter(merchant_id=shop.id, action__startswith="tag.bulk").values_list(
        "action", flat=True
    )
    assert audit == ["tag.bulk_add", "tag.bulk_remove"]


async def test_bulk_with_any_rejected_row_changes_nothing_and_reports_every_row(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    good = await make_member(shop, openid="o-good", phone="13800000001")
    await make_member(shop, openid="o-gone", phone="13800000002")
    await Member.filter(openid="o-gone").update(anonymized_at=good.registered_at, phone="13800000002")
    await make_member(shop, openid="o-s1", phone="13800000003")
    await make_member(shop, openid="o-s2", phone="13800000003")
    await make_member(await make_merchant("other"), openid="o-x", phone="13800000004")
    tag = await new_tag(client, manager, "手机批量")
    content = xlsx(
        [
            ["姓名", "手机号"],
            ["好", 13800000001],
            ["注销", "13800000002"],
            ["重复", "+86 138-0000-0001"],
            ["共用", "13800000003"],
            ["别家", "13800000004"],
            ["坏", "12345"],
            ["空", None],
        ]
    )
    response = await client.post(
        f"/api/admin/tags/{tag['id']}/bulk", data=upload(content, "名单.xlsx"), headers=manager
    )
    assert response.status == 200, await response.text()
    report = await response.json()
    assert (report["applied"], report["changed"], report["rejected"], report["column"]) == (
        False,
        0,
        6,
        "phone",
    )
    assert [(r["row"], r["reason"]) for r in report["rejections"]] == [
        (3, "erased"),
        (4, "duplicate"),
        (5, "shared"),
        (6, "unknown"),
        (7, "invalid"),
        (8, "empty"),
    ]
    assert "第 2 行" in report["rejections"][1]["message"]
    assert await holders(tag["id"]) == set()
    assert not await MemberTagHistory.filter(tag_id=tag["id"]).exists()


async def test_bulk_dry_run_and_bad_files(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    member = await make_member(shop)
    tag = await new_tag(client, manager, "试")
    path = f"/api/admin/tags/{tag['id']}/bulk"
    form = upload(f"code\n{member.code}\n".encode(), dry_run="true")
    report = await (await client.post(path, data=form, headers=manager)).json()
    assert (report["applied"], report["rejected"]) == (False, 0)
    assert await holders(tag["id"]) == set()
    for content in (b"name\nx\n", b"code,phone\nA,138\n", b""):
        response = await client.post(path, data=upload(content), headers=manager)
        assert response.status == 400, content
        assert (await response.json())["error"]["field"] == "file"
    gbk = f"会员码\n{member.code}\n".encode("gbk")
    report = await (await client.post(path, data=upload(gbk), headers=manager)).json()
    assert (report["applied"], report["changed"]) == (True, 1)


async def test_member_search_filters_by_tag(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    first = await make_member(shop, openid="o-1")
    await make_member(shop, openid="o-2")
    tag = await new_tag(client, manager, "搜")
    await post(client, f"/api/admin/tags/{tag['id']}/members", manager, {"member_id": first.id})
    admin = await staff_headers(client, shop, "admin")  # a manager searches their own store's members only
    body = await (await client.get(f"/api/admin/members?tag_id={tag['id']}", headers=admin)).json()
    assert [item["id"] for item in body["items"]] == [first.id]
    other = await Tag.create(merchant_id=(await make_merchant("other")).id, name="别家")
    response = await client.get(f"/api/admin/members?tag_id={other.id}", headers=admin)
    assert response.status == 400 and (await response.json())["error"]["field"] == "tag_id"


async def test_erasure_deletes_the_members_tags_and_keeps_the_history(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    leaving, staying = (
        await make_member(shop, openid="o-leaving"),
        await make_member(shop, openid="o-staying"),
    )
    tag = await new_tag(client, manager, "留存")
    for member in (leaving, staying):
        await post(client, f"/api/admin/tags/{tag['id']}/members", manager, {"member_id": member.id})
    now = datetime.now(UTC)
    await Member.filter(id=leaving.id).update(
        openid=None, subscribed=False, unsubscribed_at=now - timedelta(days=31)
    )
    assert await retention.erase_due(now) == 1
    assert await holders(tag["id"]) == {staying.id}
    assert (await Tag.get(id=tag["id"])).member_count == 1
    assert await MemberTagHistory.filter(member_id=leaving.id).count() == 1
    assert await retention.erase_due(now) == 0
    assert (await Tag.get(id=tag["id"])).member_count == 1
