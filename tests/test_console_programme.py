"""Console pages of the programme over HTTP: coupon templates and issuing, the earn rules saved only as
simulated, the tier ladder."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.loyalty import config as loyalty_config
from models.coupon import Coupon, CouponTemplate
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import make_member, make_merchant


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    await make_member(merchant, "o-1", name="张三", phone="13800000001")
    assert (await login(client, "shop", "alice")).status == 303
    return merchant


TEMPLATE = {
    "name": "满100减20",
    "kind": "fixed",
    "threshold_fen": "100",
    "amount_off_fen": "20",
    "valid_days": "30",
    "total_stock": "2",
    "active": "true",
}


async def create(client: TestClient, **fields: str) -> Any:
    data = {"csrf_token": await page_csrf(client, "/admin/coupons"), **TEMPLATE, **fields}
    return await client.post("/admin/coupons/templates", data=data, allow_redirects=False)


async def test_create_a_template_in_yuan(client: TestClient, shop: Merchant) -> None:
    response = await create(client)
    assert response.status == 303, await response.text()
    template = await CouponTemplate.get(merchant_id=shop.id)
    assert (template.threshold_fen, template.amount_off_fen, template.valid_days) == (10_000, 2_000, 30)
    assert (template.total_stock, template.active) == (2, True)
    html = await (await client.get(response.headers["Location"])).text()
    assert "优惠券模板已创建" in html and "满100减20" in html
    assert await AuditLog.filter(merchant_id=shop.id, action__startswith="coupon").exists()


async def test_a_refused_template_keeps_the_input_and_names_the_field(
    client: TestClient, shop: Merchant
) -> None:
    response = await create(client, amount_off_fen="20.123", name="坏券")
    assert response.status == 400
    html = await response.text()
    assert 'data-field="template.amount_off_fen"' in html
    assert 'name="amount_off_fen" value="20.123"' in html and 'name="name" value="坏券"' in html
    assert not await CouponTemplate.exists()


async def issue(client: TestClient, member_code: str, template_id: int, key: str) -> Any:
    data = {
        "csrf_token": await page_csrf(client, "/admin/coupons"),
        "member_code": member_code,
        "template_id": str(template_id),
        "reason": "投诉补偿",
        "key": key,
    }
    return await client.post("/admin/coupons/issue", data=data)


async def test_issue_a_coupon_once_per_form_within_stock(client: TestClient, shop: Merchant) -> None:
    await create(client)
    template = await CouponTemplate.get(merchant_id=shop.id)
    zhang = await Member.get(name="张三")
    response = await issue(client, zhang.code, template.id, "k1")
    assert response.status == 200
    html = await response.text()
    assert f"已向会员 {zhang.code} 发放" in html
    again = await issue(client, zhang.code, template.id, "k1")  # the same form sent twice
    assert "未重复发放" in await again.text()
    assert await Coupon.filter(member_id=zhang.id).count() == 1
    await issue(client, zhang.code, template.id, "k2")
    out = await issue(client, zhang.code, template.id, "k3")  # the stock of 2 is gone
    assert out.status == 400
    assert (
        'data-field="issue.form"' in await out.text() or 'data-field="issue.template_id"' in await out.text()
    )
    assert await Coupon.filter(member_id=zhang.id).count() == 2
    unknown = await issue(client, "NOPE1234", template.id, "k4")
    assert unknown.status == 400 and "issue." in await unknown.text()


async def test_managers_issue_but_do_not_create(client: TestClient, shop: Merchant) -> None:
    await create(client)
    template = await CouponTemplate.get(merchant_id=shop.id)
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303
    html = await (await client.get("/admin/coupons")).text()
    assert "新建优惠券模板" not in html
    assert (await create(client)).status == 403
    zhang = await Member.get(name="张三")
    assert "已向会员" in await (await issue(client, zhang.code, template.id, "m1")).text()


def rules_form(html: str) -> dict[str, str]:
    values = dict(re.findall(r'<input name="(\w+)" value="([^"]*)"', html))
    document = re.search(r'<textarea name="document"[^>]*>(.*?)</textarea>', html, re.S)
    assert document
    values["document"] = document.group(1).replace("&#34;", '"').replace("&quot;", '"')
    values["band_mode"] = "per_purchase"
    values["csrf_token"] = re.findall(r'name="csrf_token" value="([0-9a-f]+)"', html)[-1]
    return values


async def test_rules_are_saved_only_as_simulated(client: TestClient, shop: Merchant) -> None:
    html = await (await client.get("/admin/programme/rules")).text()
    data = rules_form(html)
    assert data["points_per_yuan"] == "1"
    data["points_per_yuan"] = "2"
    simulated = await client.post(
        "/admin/programme/rules/simulate", data=data, headers={"HX-Request": "true"}
    )
    assert simulated.status == 200
    fragment = await simulated.text()
    assert 'data-sim="proposed-points">0<' in fragment and "<html" not in fragment
    digest = re.search(r'name="simulated" value="([0-9a-f]+)"', fragment)
    assert digest
    changed = {**data, "points_per_yuan": "3", "simulated": digest.group(1)}
    refused = await client.post("/admin/programme/rules", data=changed, allow_redirects=False)
    assert refused.status == 400
    assert 'data-field="simulated"' in await refused.text()
    assert (await loyalty_config.current_rules(shop.id)).version == 1
    saved = await client.post(
        "/admin/programme/rules", data={**data, "simulated": digest.group(1)}, allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    rules = await loyalty_config.current_rules(shop.id)
    assert (rules.version, str(rules.points_per_yuan)) == (2, "2")


async def test_a_bad_rule_is_named_beside_the_form(client: TestClient, shop: Merchant) -> None:
    data = rules_form(await (await client.get("/admin/programme/rules")).text())
    data["points_per_yuan"] = "-1"
    response = await client.post("/admin/programme/rules/simulate", data=data)
    assert response.status == 400
    assert 'data-field="points_per_yuan"' in await response.text()


async def test_the_tier_ladder_is_shown_and_saved_as_a_new_version(
    client: TestClient, shop: Merchant
) -> None:
    html = await (await client.get("/admin/programme")).text()
    assert "会员等级" in html
    token = await page_csrf(client, "/admin/programme")
    bad = await client.post("/admin/programme/tiers", data={"csrf_token": token, "document": "[{"})
    assert bad.status == 400 and 'data-field="document"' in await bad.text()
    version, _ = await loyalty_config.current_tiers(shop.id)
    document = '[{"code": "base", "name": "普通会员", "rank": 0}]'
    saved = await client.post(
        "/admin/programme/tiers", data={"csrf_token": token, "document": document}, allow_redirects=False
    )
    assert saved.status == 303, await saved.text()
    assert (await loyalty_config.current_tiers(shop.id))[0] == version + 1


async def test_a_template_is_stopped_and_resumed_after_issuing(client: TestClient, shop: Merchant) -> None:
    await create(client)
    template = await CouponTemplate.get(merchant_id=shop.id)
    zhang = await Member.get(name="张三")
    await issue(client, zhang.code, template.id, "t1")
    token = await page_csrf(client, "/admin/coupons")
    stop = await client.post(
        f"/admin/coupons/templates/{template.id}/active",
        data={"csrf_token": token, "active": "false"},
        allow_redirects=False,
    )
    assert stop.status == 303, await stop.text()
    stopped = await CouponTemplate.get(id=template.id)
    assert (stopped.active, stopped.amount_off_fen, stopped.issued) == (False, 2_000, 1)
    refused = await issue(client, zhang.code, template.id, "t2")
    assert refused.status == 400
    await client.post(
        f"/admin/coupons/templates/{template.id}/active", data={"csrf_token": token, "active": "true"}
    )
    assert (await CouponTemplate.get(id=template.id)).active
