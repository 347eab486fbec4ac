"""The tier ladder edited field by field over HTTP: one row a tier, saved as its JSON would be, each
refusal next to the field that caused it with what was typed kept."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.loyalty import config as loyalty_config
from handlers.rules.tiers_config import tiers_to_dicts
from models.coupon import CouponTemplate
from models.merchant import Merchant
from tests.support.console import login, page_csrf, signed_in_shop
from tests.support.forms import form_pairs, replaced


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await signed_in_shop(client)


async def ladder_form(client: TestClient) -> list[tuple[str, str]]:
    return form_pairs(await (await client.get("/admin/programme")).text(), "tiers-form")


async def save(client: TestClient, pairs: list[tuple[str, str]]) -> Any:
    return await client.post("/admin/programme/tiers/form", data=pairs, allow_redirects=False)


async def ladder(merchant: Merchant) -> tuple[int, list[dict[str, Any]]]:
    version, tiers = await loyalty_config.current_tiers(merchant.id)
    return version, tiers_to_dicts(tiers)


async def make_template(client: TestClient) -> int:
    data = {
        "csrf_token": await page_csrf(client, "/admin/coupons"),
        "name": "升级礼",
        "kind": "fixed",
        "threshold_fen": "100",
        "amount_off_fen": "20",
        "valid_days": "30",
        "active": "true",
    }
    assert (await client.post("/admin/coupons/templates", data=data, allow_redirects=False)).status == 303
    return (await CouponTemplate.get(name="升级礼")).id


async def test_the_ladder_saved_unchanged_is_the_same_ladder(client: TestClient, shop: Merchant) -> None:
    version, before = await ladder(shop)
    pairs = await ladder_form(client)
    assert ("tiers[2].criteria.spend_fen", "5000.00") in pairs  # amounts in yuan
    assert ("tiers[2].benefits.points_multiplier", "1.5") in pairs
    saved = await save(client, pairs)
    assert saved.status == 303, await saved.text()
    assert await ladder(shop) == (version + 1, before)


async def test_fields_change_the_ladder_as_its_json_would(client: TestClient, shop: Merchant) -> None:
    template_id = await make_template(client)
    _, before = await ladder(shop)
    changes: dict[str, str | list[str]] = {
        "window_days": "180",
        "tiers[1].remove": "true",  # silver goes
        "tiers[2].benefits.points_multiplier": "1.8",
        "tiers[2].benefits.upgrade_gift_coupon_template_ids": [str(template_id)],
        "tiers[3].criteria.recharge_fen": "3000",
        "tiers[3].downgrade.enabled": "true",
        "tiers[3].downgrade.grace_days": "30",
        "tiers[4].code": "black",  # a blank row becomes a fifth tier
        "tiers[4].name": "黑金",
        "tiers[4].criteria.spend_fen": "50000.5",
        "tiers[4].benefits.discount_percent": "85",
    }
    saved = await save(client, replaced(await ladder_form(client), changes))
    assert saved.status == 303, await saved.text()
    version, by_form = await ladder(shop)
    expected = [dict(tier) for tier in before if tier["code"] != "silver"]
    for tier in expected[1:]:
        tier["criteria"] = {**tier["criteria"], "window_days": 180}
    expected[1]["benefits"] = {
        **expected[1]["benefits"],
        "points_multiplier": "1.8",
        "upgrade_gift_coupon_template_ids": [template_id],
    }
    expected[2]["criteria"]["recharge_fen"] = 300_000
    expected[2]["downgrade"] = {**expected[2]["downgrade"], "enabled": True, "grace_days": 30}
    black = {"code": "black", "name": "黑金", "rank": 4}
    criteria = {"window_days": 180, "spend_fen": 5_000_050}
    expected.append({**black, "criteria": criteria, "benefits": {"discount_percent": 85}})
    token = await page_csrf(client, "/admin/programme")
    document = json.dumps(expected, ensure_ascii=False)
    by_json = await client.post("/admin/programme/tiers", data={"csrf_token": token, "document": document})
    assert by_json.status == 200
    assert await ladder(shop) == (version + 1, by_form)
    assert [t["code"] for t in by_form] == ["normal", "gold", "diamond", "black"]


async def test_a_bad_value_is_named_next_to_its_field_and_kept(client: TestClient, shop: Merchant) -> None:
    version, before = await ladder(shop)
    pairs = await ladder_form(client)
    cases = (
        ({"tiers[2].benefits.points_multiplier": "-1"}, "tiers[2].benefits.points_multiplier", "不能为负数"),
        ({"tiers[3].criteria.spend_fen": "100"}, "tiers[3].criteria.spend_fen", "门槛不能低于较低等级"),
        ({"window_days": "0"}, "window_days", ""),
        ({"tiers[4].name": "黑金"}, "tiers[4].code", ""),  # a new row without its code
        ({"tiers[2].code": "normal"}, "tiers[2].code", "等级编码重复"),
        ({"tiers[2].rank": "0"}, "tiers[2].rank", "rank 严格递增"),
        ({"tiers[0].criteria.spend_fen": "10"}, "tiers[0].criteria", "基础等级不能设置升级条件"),
    )
    for change, field, message in cases:
        typed = next(iter(change.values()))
        refused = await save(client, replaced(pairs, {**change, "tiers[1].remove": "true"}))
        assert refused.status == 400, field
        html = await refused.text()
        error = form_error(html, field)
        assert message in error and error, field
        assert f'name="{next(iter(change))}" value="{typed}"' in html  # what was typed is kept
        assert 'name="tiers[1].remove" value="true" checked' in html
    assert await ladder(shop) == (version, before)


def form_error(html: str, field: str) -> str:
    marker = f'data-field="{field}">'
    assert marker in html, f"no error next to {field}"
    return html.split(marker, 1)[1].split("<", 1)[0]


async def test_a_ladder_left_empty_is_refused_at_the_top(client: TestClient, shop: Merchant) -> None:
    version, _ = await ladder(shop)
    pairs = await ladder_form(client)
    removed = replaced(pairs, {f"tiers[{i}].remove": "true" for i in range(4)})
    refused = await save(client, removed)
    assert refused.status == 400
    assert 'data-field="tiers"' in await refused.text()
    assert (await ladder(shop))[0] == version


async def test_one_more_row_comes_with_the_add_button_moved_on(client: TestClient, shop: Merchant) -> None:
    await make_template(client)
    html = await (await client.get("/admin/programme")).text()
    assert 'hx-get="/admin/programme/tiers/row?index=6"' in html  # four tiers and two blank rows
    row = await client.get("/admin/programme/tiers/row?index=6", headers={"HX-Request": "true"})
    assert row.status == 200
    fragment = await row.text()
    assert 'name="tiers[6].code"' in fragment and "升级礼" in fragment  # templates to choose from
    assert 'hx-get="/admin/programme/tiers/row?index=7" hx-target="#tier-rows"' in fragment
    assert 'hx-swap-oob="true"' in fragment
    too_far = await client.get("/admin/programme/tiers/row?index=9999")
    assert too_far.status == 400


async def test_managers_do_not_edit_the_ladder(client: TestClient, shop: Merchant) -> None:
    pairs = await ladder_form(client)
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303
    token = await page_csrf(client)
    refused = await save(client, replaced(pairs, {"csrf_token": token}))
    assert refused.status == 403
