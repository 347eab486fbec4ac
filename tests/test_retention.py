from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from bot.settings import Settings
from handlers.core.errors import NotFound
from handlers.members import lookup as members
from handlers.members import registration
from handlers.members.retention import erase_due
from handlers.staff.merchants import MerchantInput, create_merchant
from models.member import Gender, Member
from models.merchant import Merchant
from tests.conftest import SECRET
from tests.support.factories import EFFECTS

ALICE, BOB = "o-alice-000000000000000001", "o-bob-00000000000000000002"
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
KEY = SECRET.encode()


@pytest.fixture
async def app(aiohttp_client: Any, make_app: Any) -> Any:
    return (await aiohttp_client(make_app())).app


async def merchant(slug: str = "cafe", grace_days: int = 30) -> Merchant:
    shop = await create_merchant(MerchantInput(slug=slug, name="街角咖啡"))
    shop.retention_grace_days = grace_days
    await shop.save(update_fields=["retention_grace_days"])
    return shop


async def left(shop: Merchant, openid: str, days_ago: float, **extra: Any) -> Member:
    """A member with a complete profile who unfollowed `days_ago` days before NOW."""
    member = (await registration.subscribe(shop, openid, "", secret=KEY, effects=EFFECTS)).member
    await registration.complete_profile(
        member,
        now=NOW - timedelta(days=400),
        phone="13800138000",
        birthday=date(1990, 5, 20),
        gender=Gender.FEMALE,
        effects=EFFECTS,
    )
    await Member.filter(id=member.id).update(name="王小丫", unionid="u-" + openid, **extra)
    await registration.unsubscribe(shop, openid, secret=KEY, now=NOW - timedelta(days=days_ago))
    return await Member.get(id=member.id)


def profile(member: Member) -> tuple[Any, ...]:
    return (member.name, member.phone, member.birthday, member.gender, member.unionid, member.openid_digest)


async def test_profile_is_erased_after_the_grace_period(app: Any) -> None:
    shop = await merchant()
    member = await left(shop, ALICE, days_ago=30.01)
    assert await erase_due(NOW) == 1
    erased = await Member.get(id=member.id)
    assert profile(erased) == (None,) * 6
    assert erased.anonymized_at == NOW and erased.code == member.code  # the row stays for the ledger
    with pytest.raises(NotFound):
        await members.resolve(shop, code=member.code)


async def test_erasure_is_idempotent(app: Any) -> None:
    shop = await merchant()
    await left(shop, ALICE, days_ago=45)
    assert await erase_due(NOW) == 1
    assert await erase_due(NOW) == 0
    assert await erase_due(NOW + timedelta(days=1)) == 0
    assert (await Member.get(merchant_id=shop.id)).anonymized_at == NOW


async def test_nothing_is_erased_within_the_grace_period(app: Any) -> None:
    shop = await merchant()
    member = await left(shop, ALICE, days_ago=29.9)
    assert await erase_due(NOW) == 0
    kept = await Member.get(id=member.id)
    assert profile(kept) == profile(member) and kept.phone == "13800138000" and kept.anonymized_at is None


async def test_a_mini_program_bound_member_keeps_the_profile(app: Any) -> None:
    shop = await merchant()
    member = await left(shop, ALICE, days_ago=90, mp_openid="mp-alice")
    assert await erase_due(NOW) == 0
    assert profile(await Member.get(id=member.id)) == profile(member)
    await Member.filter(id=member.id).update(mp_openid=None)  # the mini-program binding goes away later
    assert await erase_due(NOW) == 1


async def test_each_merchant_has_its_own_grace_period(app: Any) -> None:
    strict, lenient = await merchant("strict", grace_days=7), await merchant("lenient", grace_days=60)
    quick = await left(strict, ALICE, days_ago=8)
    slow = await left(lenient, ALICE, days_ago=8)
    assert await erase_due(NOW) == 1
    assert (await Member.get(id=quick.id)).anonymized_at == NOW
    assert (await Member.get(id=slow.id)).anonymized_at is None


async def test_still_subscribed_members_are_never_erased(app: Any) -> None:
    shop = await merchant(grace_days=0)
    await registration.subscribe(shop, ALICE, "", secret=KEY, effects=EFFECTS)
    assert await erase_due(NOW + timedelta(days=3650)) == 0


async def test_following_again_within_the_grace_period_cancels_the_erasure(app: Any) -> None:
    shop = await merchant()
    member = await left(shop, ALICE, days_ago=20)
    back = await registration.subscribe(shop, ALICE, "", secret=KEY, effects=EFFECTS)
    assert back.restored and back.member.id == member.id
    assert await erase_due(NOW + timedelta(days=365)) == 0
    assert (await Member.get(id=member.id)).phone == "13800138000"


async def test_following_after_erasure_starts_a_new_member(app: Any) -> None:
    shop = await merchant()
    old = await left(shop, ALICE, days_ago=31)
    await erase_due(NOW)
    new = await registration.subscribe(shop, ALICE, "", secret=KEY, effects=EFFECTS)
    assert new.created and new.member.id != old.id and new.member.phone is None


async def test_now_must_be_timezone_aware(app: Any) -> None:
    with pytest.raises(ValueError, match="timezone"):
        await erase_due(datetime(2027, 3, 1))


async def memberbot(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": "memory://",
        "SECRET_KEY": SECRET,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_retention_run_erases_due_profiles(app: Any, settings: Settings) -> None:
    shop = await merchant()
    member = await left(shop, ALICE, days_ago=31)
    await left(shop, BOB, days_ago=1)
    code, out, _ = await memberbot(settings, "retention", "run", "--now", NOW.isoformat())
    assert code == 0 and "erased 1 " in out
    assert (await Member.get(id=member.id)).anonymized_at == NOW
    code, _, err = await memberbot(settings, "retention", "run", "--now", "2027-03-01T12:00:00")
    assert code == 2 and "timezone" in err


async def test_shipping_addresses_go_with_the_profile_except_on_an_order_still_to_ship(app: Any) -> None:
    from models.mall import ItemKind, MallItem, MallOrder, OrderStatus

    shop = await merchant()
    member = await left(shop, ALICE, days_ago=31)
    item = await MallItem.create(merchant=shop, kind=ItemKind.SHIPPED, name="杯子", price_points=1)
    address = {"name": "王小丫", "phone": "13800138000", "region": "上海", "detail": "1 号"}
    orders = {}
    for status in (OrderStatus.SHIPPED, OrderStatus.TO_SHIP):
        orders[status] = await MallOrder.create(
            merchant=shop,
            member=member,
            item=item,
            qty=1,
            points=1,
            status=status,
            idempotency_key=f"k-{status}",
            address=address,
            local_day=NOW.date(),
        )
    assert await erase_due(NOW) == 1
    assert (await MallOrder.get(id=orders[OrderStatus.SHIPPED].id)).address is None
    assert (await MallOrder.get(id=orders[OrderStatus.TO_SHIP].id)).address == address
    assert await erase_due(NOW) == 0
