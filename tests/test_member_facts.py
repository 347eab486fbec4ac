"""`member_facts` (migration 0025), the one relation a segment reads: its row follows every change of the
member, its tier and its tags in the writing transaction (never a stale count), erased members have none,
and on random data every expression's count and batches equal a brute-force evaluation of the source
tables (member, member_tag, member_tier, points_account)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from handlers.core import queries
from handlers.rules.tag_rules import birthday_bounds
from handlers.segments import audience
from handlers.tags import recompute
from models.loyalty import MemberTier
from models.member import Member
from models.merchant import Merchant
from models.points import PointsAccount
from models.tag import MemberTag, Tag, TagKind
from tests.support import dbutil
from tests.support.factories import make_member, make_merchant

pytestmark = pytest.mark.usefixtures("client")

GENDERS = ["male", "female", "undisclosed", None]
SOURCES = ["oa_subscribe", "mini_program", "import"]
TIERS = [None, "silver", "gold"]


async def facts(member_id: int) -> dict[str, Any] | None:
    rows = await queries.fetch_rows("SELECT * FROM member_facts WHERE member_id = :m", m=member_id)
    return rows[0] if rows else None


async def test_the_row_follows_the_member_its_tier_and_its_tags(client: TestClient) -> None:
    shop = await make_merchant()
    member = await make_member(shop, gender="female", phone="13800000001")
    row = await facts(member.id)
    assert row is not None and row["merchant_id"] == shop.id and row["gender"] == "female"
    assert row["has_phone"] and row["subscribed"] and not row["blocked"] and row["tags"] is None
    assert row["tier_code"] is None and row["lifetime_spend_fen"] == 0 and row["last_visit_at"] is None

    now = datetime.now(UTC).replace(microsecond=0)
    await Member.filter(id=member.id).update(
        gender="male", phone=None, blocked_at=now, last_visit_at=now, lifetime_spend_fen=12_345,
        subscribed=False, birthday=date(1990, 6, 1), source="import",
    )  # fmt: skip
    row = await facts(member.id)
    assert row is not None
    assert (row["gender"], row["has_phone"], row["blocked"], row["subscribed"]) == (
        "male",
        False,
        True,
        False,
    )
    assert (row["last_visit_at"], row["lifetime_spend_fen"]) == (now, 12_345)
    assert (row["birthday"], row["source"]) == (date(1990, 6, 1), "import")
    assert await audience.count(shop.id, {"attr": "gender", "op": "eq", "value": "male"}) == 1

    tier = await MemberTier.create(merchant_id=shop.id, member_id=member.id, tier_code="gold", since=now)
    assert (await facts(member.id) or {})["tier_code"] == "gold"
    await MemberTier.filter(id=tier.id).update(tier_code="silver")
    assert (await facts(member.id) or {})["tier_code"] == "silver"
    await MemberTier.filter(id=tier.id).delete()
    assert (await facts(member.id) or {})["tier_code"] is None

    vip = await Tag.create(merchant_id=shop.id, name="VIP")
    new = await Tag.create(merchant_id=shop.id, name="新品")
    await MemberTag.create(tag_id=new.id, member_id=member.id, added_at=now)
    await MemberTag.create(tag_id=vip.id, member_id=member.id, added_at=now)
    assert (await facts(member.id) or {})["tags"] == sorted([vip.id, new.id])
    assert await audience.count(shop.id, {"and": [{"tag": vip.id}, {"tag": new.id}]}) == 1
    await MemberTag.filter(tag_id=vip.id, member_id=member.id).delete()
    assert (await facts(member.id) or {})["tags"] == [new.id]
    assert await audience.count(shop.id, {"tag": vip.id}) == 0
    await new.delete()  # cascades to member_tag
    assert (await facts(member.id) or {})["tags"] is None

    await Member.filter(id=member.id).update(anonymized_at=now)  # erased: no row, never counted
    assert await facts(member.id) is None
    assert await audience.count(shop.id, {"not": {"tag": vip.id}}) == 0
    born_erased = await make_member(shop, openid="o-gone")
    await Member.filter(id=born_erased.id).update(anonymized_at=now, phone="13800000009")
    assert await facts(born_erased.id) is None


async def test_concurrent_taggings_of_one_member_both_land(client: TestClient, database_url: str) -> None:
    shop = await make_merchant()
    member = await make_member(shop)
    tags = [await Tag.create(merchant_id=shop.id, name=f"t{n}") for n in range(2)]
    first, second = [await asyncpg.connect(dbutil.dsn(database_url)) for _ in range(2)]
    insert = "INSERT INTO member_tag (tag_id, member_id, added_at) VALUES ($1, $2, now())"
    try:
        await first.execute("BEGIN")
        await first.execute(insert, tags[0].id, member.id)
        await second.execute("BEGIN")
        blocked = asyncio.ensure_future(second.execute(insert, tags[1].id, member.id))
        await asyncio.sleep(0.3)  # the second waits for the first's lock on the facts row
        assert not blocked.done()
        await first.execute("COMMIT")
        await blocked
        await second.execute("COMMIT")
    finally:
        await first.close()
        await second.close()
    assert (await facts(member.id) or {})["tags"] == sorted(t.id for t in tags)


def _tag_node(pick: random.Random, tag_ids: list[int]) -> dict[str, Any]:
    return {"tag": pick.choice(tag_ids)}


def _attr_node(pick: random.Random) -> dict[str, Any]:
    choice = pick.randrange(10)
    if choice == 0:
        return {"attr": "gender", "op": "in", "value": pick.sample(["male", "female", "undisclosed"], 2)}
    if choice == 1:
        return {"attr": "tier", "op": "eq", "value": pick.choice(["normal", "silver", "gold"])}
    if choice == 2:
        return {"attr": "source", "op": "eq", "value": pick.choice(SOURCES)}
    if choice == 3:
        return {"attr": "birthday_month", "op": "in", "value": pick.sample(range(1, 13), 4)}
    if choice == 4:
        return {"attr": "last_visit_days", "op": "between", "value": sorted(pick.sample(range(0, 400), 2))}
    if choice == 5:
        return {"attr": "lifetime_spend_fen", "op": "gte", "value": pick.randrange(0, 100_000)}
    if choice == 6:
        return {"attr": "points", "op": "lte", "value": pick.randrange(0, 1000)}
    if choice == 7:
        return {"attr": "age", "op": "between", "value": sorted(pick.sample(range(18, 70), 2))}
    if choice == 8:
        return {"attr": "registered_days", "op": "gte", "value": pick.randrange(0, 900)}
    return {
        "attr": pick.choice(["subscribed", "has_phone", "blocked"]),
        "op": "eq",
        "value": pick.random() < 0.5,
    }


def random_expression(pick: random.Random, tag_ids: list[int], depth: int = 0) -> dict[str, Any]:
    roll = pick.random()
    if depth >= 3 or roll < 0.35:
        return _tag_node(pick, tag_ids) if pick.random() < 0.5 else _attr_node(pick)
    if roll < 0.5:
        return {"not": random_expression(pick, tag_ids, depth + 1)}
    key = "and" if roll < 0.75 else "or"
    return {key: [random_expression(pick, tag_ids, depth + 1) for _ in range(pick.randrange(2, 5))]}


def holds(expr: dict[str, Any], m: dict[str, Any], now: datetime, today: date) -> bool:
    """The expression's meaning, evaluated on one member's source rows."""
    if "and" in expr:
        return all(holds(e, m, now, today) for e in expr["and"])
    if "or" in expr:
        return any(holds(e, m, now, today) for e in expr["or"])
    if "not" in expr:
        return not holds(expr["not"], m, now, today)
    if "tag" in expr:
        return expr["tag"] in m["tags"]
    name, op, value = expr["attr"], expr["op"], expr["value"]
    low, high = (value, None) if op == "gte" else (None, value) if op == "lte" else (None, None)
    if op == "between":
        low, high = value
    match name:
        case "gender" | "source":
            return m[name] in value
        case "tier":
            return (m["tier"] or "normal") == value
        case "birthday_month":
            return m["birthday"] is not None and m["birthday"].month in value
        case "age":
            earliest, latest = birthday_bounds(today, low, high)
            return m["birthday"] is not None and earliest <= m["birthday"] <= latest  # type: ignore[operator]
        case "last_visit_days" | "registered_days":
            at = m["last_visit_at" if name == "last_visit_days" else "registered_at"]
            if at is None:
                return False
            return (low is None or at <= now - timedelta(days=low)) and (
                high is None or at >= now - timedelta(days=high)
            )
        case "lifetime_spend_fen" | "points":
            amount = m[name]
            return (low is None or amount >= low) and (high is None or amount <= high)
        case "subscribed":
            return bool(m["subscribed"]) == value
        case "has_phone":
            return (m["phone"] is not None) == value
        case "blocked":
            return (m["blocked_at"] is not None) == value
    raise AssertionError(name)


async def random_world(pick: random.Random, shop: Merchant, size: int) -> list[int]:
    now = datetime.now(UTC)
    tag_ids = [(await Tag.create(merchant_id=shop.id, name=f"标签{n}")).id for n in range(4)]
    for n in range(size):
        member = await make_member(
            shop,
            openid=f"o-rand-{n}",
            gender=pick.choice(GENDERS),
            phone=f"139{n:08d}" if pick.random() < 0.7 else None,
            birthday=date(pick.randrange(1950, 2006), pick.randrange(1, 13), pick.randrange(1, 29))
            if pick.random() < 0.7
            else None,
        )
        # whole days plus half a day: no member sits on a threshold whatever the clock reads in between
        visit = now - timedelta(days=pick.randrange(0, 500) + 0.5) if pick.random() < 0.8 else None
        await Member.filter(id=member.id).update(
            source=pick.choice(SOURCES),
            registered_at=now - timedelta(days=pick.randrange(0, 1000) + 0.5),
            last_visit_at=visit,
            lifetime_spend_fen=pick.randrange(0, 120_000),
            subscribed=pick.random() < 0.8,
            blocked_at=now if pick.random() < 0.1 else None,
        )
        tier = pick.choice(TIERS)
        if tier:
            await MemberTier.create(merchant_id=shop.id, member_id=member.id, tier_code=tier, since=now)
        if pick.random() < 0.7:
            await PointsAccount.create(
                merchant_id=shop.id, member_id=member.id, balance=pick.randrange(0, 1500)
            )
        for tag_id in tag_ids:
            if pick.random() < 0.35:
                await MemberTag.create(tag_id=tag_id, member_id=member.id, added_at=now)
        if pick.random() < 0.1:  # some erased: tags dropped later, as retention does
            await Member.filter(id=member.id).update(anonymized_at=now)
    for tag_id in tag_ids[:2]:  # and some changed after: removals, additions, a tier moved
        await queries.fetch_rows("DELETE FROM member_tag WHERE tag_id = :t AND member_id % 3 = 0", t=tag_id)
    await queries.fetch_rows(
        "INSERT INTO member_tag (tag_id, member_id, added_at) SELECT :t, id, now() FROM member"
        " WHERE merchant_id = :s AND id % 4 = 1 ON CONFLICT DO NOTHING",
        t=tag_ids[3],
        s=shop.id,
    )
    await queries.fetch_rows("UPDATE member_tier SET tier_code = 'gold' WHERE member_id % 5 = 0")
    return tag_ids


async def source_rows(shop: Merchant) -> list[dict[str, Any]]:
    return await queries.fetch_rows(
        """SELECT m.id, m.gender, m.source, m.birthday, m.registered_at, m.last_visit_at,
                  m.lifetime_spend_fen, m.subscribed, m.phone, m.blocked_at, t.tier_code AS tier,
                  COALESCE(a.balance, 0) AS points,
                  ARRAY(SELECT tag_id FROM member_tag mt WHERE mt.member_id = m.id) AS tags
             FROM member m
             LEFT JOIN member_tier t ON t.member_id = m.id
             LEFT JOIN points_account a ON a.member_id = m.id
            WHERE m.merchant_id = :s AND m.anonymized_at IS NULL ORDER BY m.id""",
        s=shop.id,
    )


async def test_counts_and_batches_equal_a_brute_force_evaluation(client: TestClient) -> None:
    pick = random.Random(20261206)
    shop = await make_merchant()
    await make_member(await make_merchant("elsewhere"), openid="o-other")  # another merchant's member
    tag_ids = await random_world(pick, shop, 60)
    members = await source_rows(shop)
    merchant = await Merchant.get(id=shop.id)
    checked = 0
    for _ in range(80):
        expr = random_expression(pick, tag_ids)
        now = datetime.now(UTC)
        today = now.astimezone(ZoneInfo(merchant.timezone)).date()
        expected = [m["id"] for m in members if holds(expr, m, now, today)]
        assert await audience.count(shop.id, expr) == len(expected), expr
        batches = [b async for b in audience.iter_member_ids(shop.id, expr, batch=7)]
        assert [i for b in batches for i in b] == expected, expr
        total, sample = await audience.preview(shop.id, expr, sample=5)
        assert total == len(expected) and [s.id for s in sample] == expected[:5], expr
        checked += bool(expected) and len(expected) < len(members)
    assert checked >= 20  # most expressions select some members but not all


async def test_the_rebuild_writes_what_the_triggers_kept(client: TestClient) -> None:
    pick = random.Random(7)
    shop = await make_merchant()
    await random_world(pick, shop, 25)
    kept = await queries.fetch_rows(
        "SELECT * FROM member_facts WHERE merchant_id = :s ORDER BY member_id", s=shop.id
    )
    rows = await queries.fetch_rows("SELECT memberbot_member_facts_rebuild(:s) AS n", s=shop.id)
    rebuilt = await queries.fetch_rows(
        "SELECT * FROM member_facts WHERE merchant_id = :s ORDER BY member_id", s=shop.id
    )
    assert rows[0]["n"] == len(rebuilt) == len(kept) > 0
    assert rebuilt == kept


async def vacuums_of_facts() -> int:
    rows = await queries.fetch_rows(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'member_facts'"
    )
    return int(rows[0]["vacuum_count"])


async def test_a_large_tag_change_leaves_the_facts_vacuumed(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every tagged member's facts row is rewritten; after a large recomputation the dead versions are
    vacuumed away (outside its transaction), so the next counts do not scan them; a small one is not."""
    monkeypatch.setattr(recompute, "ANALYZE_AFTER", 4)
    shop = await make_merchant()
    women = [await make_member(shop, gender="female", openid=f"o-f{n}") for n in range(5)]
    await make_member(shop, gender="male", openid="o-m")
    now = datetime.now(UTC)
    rule = {"type": "gender", "genders": ["female"]}
    tag = await Tag.create(merchant_id=shop.id, name="女", kind=TagKind.AUTO, rule=rule, rule_version=1)
    before = await vacuums_of_facts()
    counts = await recompute.recompute_tag(shop.id, tag.id, now=now, timezone="Asia/Shanghai")
    assert counts == {"members": 5, "added": 5, "removed": 0}
    assert await vacuums_of_facts() == before + 1
    assert await audience.count(shop.id, {"tag": tag.id}) == 5
    assert [(await facts(w.id) or {})["tags"] for w in women] == [[tag.id]] * 5

    await Member.filter(id=women[0].id).update(gender="male")
    counts = await recompute.recompute_tag(shop.id, tag.id, now=now, timezone="Asia/Shanghai")
    assert counts == {"members": 4, "added": 0, "removed": 1}
    assert await vacuums_of_facts() == before + 1  # one change: no vacuum
    assert await audience.count(shop.id, {"not": {"tag": tag.id}}) == 2
