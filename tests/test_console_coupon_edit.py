"""The console's coupon template page: its form filled with the current fields, saving through the API's
replace (terms frozen once issued), deleting a never-issued template after a confirmation."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from models.coupon import CouponTemplate
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import make_member, make_merchant

TEMPLATE = {
    "name": "满100减20",
    "kind": "fixed",
    "threshold_fen": "100",
    "amount_off_fen": "20",
    "valid_days": "30",
    "total_stock": "5",
    "active": "true",
}


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    await make_member(merchant, "o-1", name="张三", phone="13800000001")
    assert (await login(client, "shop", "alice")).status == 303
    return merchant


async def template(client: TestClient, **fields: str) -> CouponTemplate:
    data = {"csrf_token": await page_csrf(client, "/admin/coupons"), **TEMPLATE, **fields}
    response = await client.post("/admin/coupons/templates", data=data, allow_redirects=False)
    assert response.status == 303, await response.text()
    return await CouponTemplate.get(name=fields.get("name", TEMPLATE["name"]))


async def save(client: TestClient, t: CouponTemplate, token: str | None = None, **fields: str) -> Any:
    token = token if token is not None else await page_csrf(client, f"/admin/coupons/templates/{t.id}")
    data = {"csrf_token": token, **TEMPLATE, **fields}
    return await client.post(f"/admin/coupons/templates/{t.id}", data=data, allow_redirects=False)


async def test_the_form_shows_the_current_fields(client: TestClient, shop: Merchant) -> None:
    t = await template(client, valid_days="", valid_from="2026-12-01", valid_until="2026-12-31")
    listing = await (await client.get("/admin/coupons")).text()
    assert f'href="/admin/coupons/templates/{t.id}"' in listing
    html = await (await client.get(f"/admin/coupons/templates/{t.id}")).text()
    for name, value in {
        "name": "满100减20",
        "threshold_fen": "100.00",
        "amount_off_fen": "20.00",
        "total_stock": "5",
        "valid_from": "2026-12-01",
        "valid_until": "2026-12-31",  # the last day, as typed (stored as the next day's start)
        "valid_days": "",
    }.items():
        assert f'name="{name}" value="{value}"' in html, name
    assert '<option value="fixed" selected>' in html
    assert 'name="active" value="true" checked' in html


async def test_a_valid_edit_changes_the_template_and_is_audited(client: TestClient, shop: Merchant) -> None:
    t = await template(client)
    response = await save(
        client, t, name="满100减30", amount_off_fen="30", total_stock="8", store_codes="main", active=""
    )
    assert response.status == 303, await response.text()
    await t.refresh_from_db()
    assert (t.name, t.amount_off_fen, t.total_stock, t.store_codes, t.active) == (
        "满100减30",
        3_000,
        8,
        ["main"],
        False,
    )
    assert await AuditLog.filter(merchant_id=shop.id, action="coupon_template.replace").exists()
    html = await (await client.get(response.headers["Location"])).text()
    assert "优惠券模板已修改" in html and "满100减30" in html


async def test_an_invalid_edit_keeps_the_input_and_changes_nothing(
    client: TestClient, shop: Merchant
) -> None:
    t = await template(client)
    response = await save(client, t, name="改坏了", amount_off_fen="20.123")
    assert response.status == 400
    html = await response.text()
    assert 'data-field="template.amount_off_fen"' in html
    assert 'name="amount_off_fen" value="20.123"' in html and 'name="name" value="改坏了"' in html
    unknown = await save(client, t, store_codes="nowhere")
    assert unknown.status == 400 and 'data-field="template.store_codes' in await unknown.text()
    await t.refresh_from_db()
    assert (t.name, t.amount_off_fen, t.store_codes) == ("满100减20", 2_000, None)


async def test_issued_terms_are_frozen_but_the_name_may_change(client: TestClient, shop: Merchant) -> None:
    t = await template(client)
    zhang = await Member.get(name="张三")
    issue = {
        "csrf_token": await page_csrf(client, "/admin/coupons"),
        "member_code": zhang.code,
        "template_id": str(t.id),
        "reason": "补偿",
        "key": "k1",
    }
    assert (await client.post("/admin/coupons/issue", data=issue)).status == 200
    page = await (await client.get(f"/admin/coupons/templates/{t.id}")).text()
    assert "不能再改" in page and 'id="template-delete"' not in page
    refused = await save(client, t, amount_off_fen="50")
    assert refused.status == 400
    html = await refused.text()
    assert 'data-field="template.amount_off_fen"' in html and "已发放的券不能修改优惠内容" in html
    assert 'name="amount_off_fen" value="50"' in html
    await t.refresh_from_db()
    assert t.amount_off_fen == 2_000
    assert (await save(client, t, name="满100减20（老客）")).status == 303
    await t.refresh_from_db()
    assert t.name == "满100减20（老客）"
    delete = await client.post(
        f"/admin/coupons/templates/{t.id}/delete", data={"csrf_token": await page_csrf(client)}
    )
    assert delete.status == 400 and 'data-field="delete"' in await delete.text()
    assert await CouponTemplate.exists(id=t.id)


async def test_delete_asks_first_and_removes_a_never_issued_template(
    client: TestClient, shop: Merchant
) -> None:
    t = await template(client)
    page = await (await client.get(f"/admin/coupons/templates/{t.id}")).text()
    assert 'id="template-delete"' in page and 'data-confirm="确定删除优惠券模板' in page
    response = await client.post(
        f"/admin/coupons/templates/{t.id}/delete",
        data={"csrf_token": await page_csrf(client)},
        allow_redirects=False,
    )
    assert response.status == 303
    assert not await CouponTemplate.exists(id=t.id)
    assert await AuditLog.filter(merchant_id=shop.id, action="coupon_template.delete").exists()
    assert "优惠券模板已删除" in await (await client.get(response.headers["Location"])).text()
    assert (await client.get(f"/admin/coupons/templates/{t.id}")).status == 404


async def test_without_the_csrf_token_nothing_changes(client: TestClient, shop: Merchant) -> None:
    t = await template(client)
    assert (await save(client, t, token="", name="偷改")).status == 403
    gone = await client.post(f"/admin/coupons/templates/{t.id}/delete", data={})
    assert gone.status == 403
    await t.refresh_from_db()
    assert t.name == "满100减20"


async def test_managers_cannot_edit_templates(client: TestClient, shop: Merchant) -> None:
    t = await template(client)
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303
    assert 'href="/admin/coupons/templates/' not in await (await client.get("/admin/coupons")).text()
    assert (await client.get(f"/admin/coupons/templates/{t.id}")).status == 403
    token = await page_csrf(client, "/admin/coupons")
    assert (await save(client, t, token=token, name="店长改")).status == 403
    deleted = await client.post(f"/admin/coupons/templates/{t.id}/delete", data={"csrf_token": token})
    assert deleted.status == 403
    await t.refresh_from_db()
    assert t.name == "满100减20"
