"""The "other" programme settings edited field by field over HTTP: saved as the JSON section would be,
each refusal next to the field that caused it with what was typed kept."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.loyalty import config as loyalty_config
from handlers.rules.program import program_to_dict
from models.coupon import CouponTemplate
from models.merchant import Merchant
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import make_merchant
from tests.support.forms import form_pairs, replaced

SETTINGS = "/admin/programme/settings"


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    assert (await login(client, "shop", "alice")).status == 303
    return merchant


async def other_form(client: TestClient) -> list[tuple[str, str]]:
    return form_pairs(await (await client.get(SETTINGS)).text(), "other-form")


async def save(client: TestClient, pairs: list[tuple[str, str]]) -> Any:
    return await client.post(f"{SETTINGS}/other/form", data=pairs, allow_redirects=False)


async def programme(merchant: Merchant) -> dict[str, Any]:
    return program_to_dict(await loyalty_config.program(merchant.id))


async def templates(client: TestClient, *names: str) -> list[int]:
    token = await page_csrf(client, "/admin/coupons")
    for name in names:
        data = {"csrf_token": token, "name": name, "kind": "gift", "gift_name": "咖啡", "valid_days": "30"}
        assert (await client.post("/admin/coupons/templates", data=data, allow_redirects=False)).status == 303
    return [(await CouponTemplate.get(name=name)).id for name in names]


async def test_the_settings_saved_unchanged_are_the_same(client: TestClient, shop: Merchant) -> None:
    before = await programme(shop)
    pairs = await other_form(client)
    assert ("expiry.kind", "rolling_months") in pairs and ("referral.level_points[1]", "30") in pairs
    saved = await save(client, pairs)
    assert saved.status == 303, await saved.text()
    assert await programme(shop) == before


async def test_fields_change_the_settings_as_the_json_would(client: TestClient, shop: Merchant) -> None:
    welcome, gift = await templates(client, "新人礼", "见面礼")
    changes: dict[str, str | list[str]] = {
        "expiry.kind": "yearly_clearance",
        "expiry.month": "12",
        "expiry.day": "31",
        "pending_days": "7",
        "points_per_yuan_cash": "200",
        "registration_bonus": "88",
        "profile_bonus": "0",
        "offset.enabled": [],  # unchecked
        "offset.points_per_yuan": "50",
        "offset.min_points": "500",
        "offset.max_percent": "30",
        "referral.trigger": "registration",
        "referral.level_points[0]": "200",
        "referral.level_points[1]": "50",
        "referral.level_points[2]": "10",
        "earn_pool": "pool-2026",
        "new_member_coupon_template_ids": [str(welcome), str(gift)],
    }
    saved = await save(client, replaced(await other_form(client), changes))
    assert saved.status == 303, await saved.text()
    by_form = await programme(shop)
    section = {
        "expiry": {"kind": "yearly_clearance", "month": 12, "day": 31},
        "pending_days": 7,
        "points_per_yuan_cash": 200,
        "registration_bonus": 88,
        "profile_bonus": 0,
        "offset": {"enabled": False, "min_points": 500, "max_percent": 30, "points_per_yuan": 50},
        "referral": {"trigger": "registration", "level_points": [200, 50, 10]},
        "earn_pool": "pool-2026",
        "new_member_coupon_template_ids": [welcome, gift],
    }
    token = await page_csrf(client, SETTINGS)
    document = {"csrf_token": token, "document": json.dumps(section)}
    by_json = await client.post(f"{SETTINGS}/other", data=document, allow_redirects=False)
    assert by_json.status == 303
    assert await programme(shop) == by_form
    assert by_form["checkin"] == program_to_dict(loyalty_config.Program())["checkin"]  # untouched
    html = await (await client.get(SETTINGS)).text()
    assert f'<option value="{gift}" selected>' in html and 'name="expiry.month" value="12"' in html


async def test_a_bad_value_is_named_next_to_its_field_and_kept(client: TestClient, shop: Merchant) -> None:
    before = await programme(shop)
    pairs = await other_form(client)
    cases = (
        ({"offset.max_percent": "150"}, "offset.max_percent"),
        ({"referral.level_points[1]": "-5"}, "referral.level_points[1]"),
        ({"referral.level_points[3]": "5"}, "referral.level_points[2]"),  # a level skipped
        ({"expiry.months": "十二"}, "expiry.months"),
        ({"pending_days": "91"}, "pending_days"),
        ({"registration_bonus": ""}, "registration_bonus"),
        ({"referral.trigger": "anyone"}, "referral.trigger"),
    )
    for change, field in cases:
        name, typed = next(iter(change.items()))
        refused = await save(client, replaced(pairs, change))
        assert refused.status == 400, field
        html = await refused.text()
        assert f'data-field="{field}">' in html, field
        assert f'name="{name}" value="{typed}"' in html or name == "referral.trigger", field
    assert await programme(shop) == before
