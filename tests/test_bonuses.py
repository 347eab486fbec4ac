"""Registration and profile-completion bonuses: at most once per member, expiry, registration referrals."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

from handlers import effects
from handlers.campaigns.sending import CAMPAIGN_PLAN, CAMPAIGN_SEND
from handlers.loyalty import bonuses
from handlers.loyalty import config as loyalty_config
from handlers.loyalty.ledger_audit import audit_points
from handlers.members import lookup as members
from handlers.members import registration
from handlers.notices.delivery import NOTICE_SEND
from handlers.rules.expiry import RollingMonths, expiry_date
from handlers.segments import wechat_sync
from models.member import Gender
from models.points import PointsAccount, PointsKind, PointsLot, PointsTransaction
from tests.conftest import SECRET
from tests.support.factories import EFFECTS, make_member, make_merchant
from webhooks.appkeys import EFFECTS as APP_EFFECTS


async def balance(member_id: int) -> int:
    account = await PointsAccount.get_or_none(member_id=member_id)
    return account.balance if account is not None else 0


async def test_the_app_runs_the_one_registry_of_effects(client: Any) -> None:
    """One registry (handlers.effects): no hook list a process could forget to install."""
    assert (
        set(client.app[APP_EFFECTS].handlers)
        == set(effects.HANDLERS)
        | {NOTICE_SEND, CAMPAIGN_PLAN, CAMPAIGN_SEND}
        | set(wechat_sync.handlers(None))
        == set(EFFECTS.handlers)
    )
    assert {members.MEMBER_REGISTERED, registration.PROFILE_COMPLETED} <= set(effects.HANDLERS)


async def test_registration_bonus_is_credited_once_with_expiry(client: Any) -> None:
    shop = await make_merchant()
    before = datetime.now(UTC)
    subscribed = await registration.subscribe(
        shop, "o-new-follower", "", secret=SECRET.encode(), effects=EFFECTS
    )
    assert subscribed.created
    member = subscribed.member
    await registration.subscribe(
        shop, "o-new-follower", "", secret=SECRET.encode(), effects=EFFECTS
    )  # a duplicate delivery
    await asyncio.gather(
        *(bonuses.registration_bonus(member, now=datetime.now(UTC), effects=EFFECTS) for _ in range(4))
    )  # the hook run again
    txns = await PointsTransaction.filter(member_id=member.id)
    assert [(t.kind, t.delta, t.idempotency_key) for t in txns] == [
        (PointsKind.EARN_REGISTRATION, 100, f"registration:{member.id}")
    ]
    lot = await PointsLot.get(member_id=member.id)
    assert lot.expires_at == expiry_date(before, RollingMonths(12), shop.timezone)
    assert await audit_points() == []


async def test_profile_bonus_only_on_first_completion(client: Any) -> None:
    shop = await make_merchant()
    member = await make_member(shop)
    now = datetime.now(UTC)
    assert await registration.complete_profile(
        member, now=now, phone="13800138000", birthday=date(1990, 1, 2), gender=Gender.FEMALE, effects=EFFECTS
    )
    assert not await registration.complete_profile(member, now=now, gender=Gender.MALE, effects=EFFECTS)
    await asyncio.gather(
        bonuses.profile_bonus(member, now=datetime.now(UTC)),
        bonuses.profile_bonus(member, now=datetime.now(UTC)),
    )
    txns = await PointsTransaction.filter(member_id=member.id)
    assert [(t.kind, t.delta) for t in txns] == [(PointsKind.EARN_PROFILE, 50)]
    assert await audit_points() == []


async def test_zero_bonus_posts_nothing_and_never_expiring_points(client: Any) -> None:
    shop = await make_merchant()
    await loyalty_config.save_program(
        shop.id, {"registration_bonus": 0, "profile_bonus": 7, "expiry": {"kind": "never"}}, actor="test"
    )
    member = (
        await registration.subscribe(shop, "o-zero", "", secret=SECRET.encode(), effects=EFFECTS)
    ).member
    assert await balance(member.id) == 0
    await bonuses.profile_bonus(member, now=datetime.now(UTC))
    assert await balance(member.id) == 7
    assert (await PointsLot.get(member_id=member.id)).expires_at is None
    assert await audit_points() == []


async def test_referral_awarded_at_registration_only_when_that_is_the_trigger(client: Any) -> None:
    secret = SECRET.encode()
    shop = await make_merchant()
    await loyalty_config.save_program(
        shop.id,
        {"registration_bonus": 10, "referral": {"trigger": "registration", "level_points": [100, 30]}},
        actor="test",
    )
    grandparent = (await registration.subscribe(shop, "o-grand", "", secret=secret, effects=EFFECTS)).member
    scene = f"qrscene_ref_{grandparent.code}"
    parent = (await registration.subscribe(shop, "o-parent", scene, secret=secret, effects=EFFECTS)).member
    scene = f"qrscene_ref_{parent.code}"
    child = (await registration.subscribe(shop, "o-child", scene, secret=secret, effects=EFFECTS)).member
    await bonuses.registration_bonus(
        child, now=datetime.now(UTC), effects=EFFECTS
    )  # the hook again: nothing more
    assert [await balance(m.id) for m in (grandparent, parent, child)] == [10 + 100 + 30, 10 + 100, 10]

    other = await make_merchant("other")
    await loyalty_config.save_program(
        other.id, {"referral": {"trigger": "first_purchase", "level_points": [100]}}, actor="test"
    )
    host = (await registration.subscribe(other, "o-host", "", secret=secret, effects=EFFECTS)).member
    await registration.subscribe(other, "o-guest", f"qrscene_ref_{host.code}", secret=secret, effects=EFFECTS)
    assert await balance(host.id) == 0
    assert await audit_points() == []
