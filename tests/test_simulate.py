"""The what-if simulator against a hand-computed example, over HTTP and directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from handlers.core.errors import ValidationError
from handlers.loyalty import config as loyalty_config
from handlers.loyalty import simulate
from models.loyalty import RuleSetVersion
from models.member import Member
from models.merchant import Merchant, Store
from models.purchase import Purchase, PurchaseStatus
from tests.support.factories import make_member, make_merchant
from tests.test_admin_loyalty import error_of, login


async def purchase(
    shop: Merchant,
    member: Member,
    key: str,
    paid_fen: int,
    at: datetime,
    *,
    store: Store | None = None,
    tier: str = "normal",
    status: PurchaseStatus = PurchaseStatus.COMPLETED,
    items: Any = (),
) -> Purchase:
    row = await Purchase.create(
        merchant_id=shop.id,
        member_id=member.id,
        store=store,
        idempotency_key=key,
        request_digest="d" * 64,
        amount_fen=paid_fen,
        paid_fen=paid_fen,
        tier_code=tier,
        items=list(items),
        status=status,
        points_earned=paid_fen // 100,
    )
    await Purchase.filter(id=row.id).update(created_at=at)
    return row


async def example(now: datetime) -> tuple[Merchant, dict[str, Any]]:
    """Two purchases in the window, plus purchases the simulator must leave out.

    Current rules (defaults): 1 point per yuan, silver 1.2x.
      A: 123.45 yuan, normal, 10 days ago at store main  -> floor(123.45)            = 123
      B: 50.00 yuan, silver, 3 days ago, a mug in its items -> floor(50 * 1.2)        = 60
    Proposed: 2 points per yuan, silver 1.5x, a 2x promotion on A's local day at store main,
    category "mug" 3x:
      A: 123.45 * 2 = 246.9, * 2 (promotion)                                         = 493
      B: 50 * 2 = 100, items: mug 3000 of 5000 fen at 3x -> 100 + 60 * 2 = 220, * 1.5 = 330
    Current 183 points, proposed 823; with 50 points per yuan they cost 366 and 1646 fen.
    """
    shop = await make_merchant()
    await loyalty_config.save_program(shop.id, {"points_per_yuan_cash": 50}, actor="test")
    main = await Store.get(merchant_id=shop.id, code="main")
    alice = await make_member(shop, openid="o-alice")
    bob = await make_member(shop, openid="o-bob")
    at_a = now - timedelta(days=10)
    await purchase(shop, alice, "a", 12345, at_a, store=main)
    mug = {"sku": "MUG-1", "category": "mug", "qty": 2, "unit_price_fen": 1500}
    tea = {"sku": "TEA-1", "category": "tea", "qty": 1, "unit_price_fen": 2000}
    await purchase(shop, bob, "b", 5000, now - timedelta(days=3), tier="silver", items=[mug, tea, {"bad": 1}])
    await purchase(shop, bob, "refunded", 99900, now - timedelta(days=2), status=PurchaseStatus.REFUNDED)
    await purchase(shop, bob, "old", 77700, now - timedelta(days=45))
    other = await make_merchant("other")
    await purchase(other, await make_member(other, openid="o-x"), "x", 88800, now - timedelta(days=1))
    day = at_a.astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
    proposed = {
        "points_per_yuan": 2,
        "tier_multipliers": {"silver": "1.5"},
        "category_multipliers": {"mug": 3},
        "promotions": [
            {
                "code": "double",
                "label": "双倍积分",
                "start": day,
                "end": day,
                "multiplier": 2,
                "store_codes": ["main"],
            }
        ],
    }
    return shop, proposed


async def test_simulation_matches_the_hand_computed_example(client: TestClient) -> None:
    now = datetime.now(UTC)
    shop, proposed = await example(now)
    manager = await login(client, shop, "manager")
    response = await client.post(
        "/api/admin/rules/simulate", json={"rules": proposed, "days": 30}, headers=manager
    )
    assert response.status == 200, await response.text()
    result = await response.json()
    assert result["purchases"] == 2
    assert result["recorded_points"] == 123 + 50
    assert result["current"] == {"rule_set_version": 1, "points": 183, "cost_fen": 366}
    assert result["proposed"] == {"rule_set_version": 2, "points": 823, "cost_fen": 1646}
    assert (result["difference_points"], result["difference_fen"]) == (640, 1280)
    assert await RuleSetVersion.filter(merchant_id=shop.id).count() == 1  # nothing was saved


async def test_window_and_current_rules(client: TestClient) -> None:
    now = datetime.now(UTC)
    shop, proposed = await example(now)
    recent = await simulate.simulate(shop.id, proposed, days=5, now=now)
    assert (recent.purchases, recent.current.points, recent.proposed.points) == (1, 60, 330)
    await loyalty_config.save_rules(shop.id, {"points_per_yuan": 3}, actor="test")
    year = await simulate.simulate(shop.id, proposed, days=366, now=now)
    assert year.purchases == 3
    assert year.current.rule_set_version == 2 and year.current.points == 370 + 150 + 2331


async def test_days_are_bounded_and_invalid_rules_are_400(client: TestClient) -> None:
    shop = await make_merchant()
    manager = await login(client, shop, "manager")
    for days in (0, 367, "7"):
        response = await client.post(
            "/api/admin/rules/simulate", json={"rules": {"points_per_yuan": 1}, "days": days}, headers=manager
        )
        assert (await error_of(response, 400))["field"] == "days"
    response = await client.post(
        "/api/admin/rules/simulate", json={"rules": {"points_per_yuan": "lots"}}, headers=manager
    )
    assert (await error_of(response, 400))["field"] == "rules.points_per_yuan"
    with pytest.raises(ValidationError):
        await simulate.simulate(shop.id, {"points_per_yuan": 1}, days=400, now=datetime.now(UTC))
