"""The overdue view's rollup (migration 0025): kept in every credit write's transaction, equal to the
full FIFO recomputation from the ledger after every kind of write and under concurrency, its drift
reported by the audit, and the merchant-wide list read from the read replica when there is one."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from handlers.core import queries
from handlers.credit import ledger as credit
from handlers.credit import overdue
from handlers.credit.audit import audit_credit, audit_rollup
from handlers.staff.scope import Scope
from handlers.till.refund import refund_purchase
from tests.support.factories import EFFECTS, make_member, make_merchant, staff_headers
from tests.test_analytics import _replica_database
from tests.test_credit import DAY, NOW, buy, limit, repay

Figures = list[tuple[int, int, datetime, int, int]]


@pytest.fixture
async def shop(client: Any) -> Any:
    merchant = await make_merchant()
    member = await make_member(merchant)
    return merchant, member


async def from_rollup(merchant: Any, as_of: datetime) -> Figures:
    found = await overdue.overdue(merchant, as_of, scope=Scope(merchant.id, None))
    return [(r.member_id, r.overdue_fen, r.oldest_due_at, r.owed_fen, r.limit_fen) for r in found]


async def from_ledger(merchant: Any, as_of: datetime) -> Figures:
    rows = await queries.fetch_rows(overdue.LEDGER_OVERDUE_SQL, merchant=merchant.id, as_of=as_of, store=None)
    return [
        (r["member_id"], int(r["overdue_fen"]), r["oldest_due_at"], int(r["owed_fen"]), int(r["limit_fen"]))
        for r in rows
    ]


async def assert_exact(merchant: Any, *days: float) -> None:
    """The rollup equals the recomputation, charge by charge, and the overdue list equals the ledger's at
    each of `days` (after NOW)."""
    assert await audit_credit(merchant.id) == []
    for day in days:
        as_of = NOW + day * DAY
        assert await from_rollup(merchant, as_of) == await from_ledger(merchant, as_of), day


async def test_the_rollup_follows_every_kind_of_write_first_in_first_out(shop: Any) -> None:
    merchant, alice = shop
    bob = await make_member(merchant, openid="o-bob")
    for member in (alice, bob):
        await limit(shop, 100_000, key=f"l{member.id}", member=member)
    await buy(shop, "a1", 10_000, credit_fen=10_000, member=alice, now=NOW)  # due day 30
    await buy(shop, "a2", 5_000, credit_fen=5_000, member=alice, now=NOW + 10 * DAY)  # due day 40
    await assert_exact(merchant, 0, 31, 45)
    assert await from_rollup(merchant, NOW + 45 * DAY) == [
        (alice.id, 15_000, NOW + 30 * DAY, 15_000, 100_000)
    ]
    await repay(shop, 12_000, "ar", member=alice, now=NOW + 20 * DAY)  # pays a1 and 20 of a2
    await assert_exact(merchant, 31, 45)
    assert await from_rollup(merchant, NOW + 45 * DAY) == [(alice.id, 3_000, NOW + 40 * DAY, 3_000, 100_000)]
    # A shorter period: a later charge falls due before an earlier one, and takes the repayment first.
    await overdue.set_overdue_days(merchant, 5, actor="staff:1")
    await buy(shop, "a3", 4_000, credit_fen=4_000, member=alice, now=NOW + 21 * DAY)  # due day 26
    await assert_exact(merchant, 21, 27, 31, 45)
    assert await from_rollup(merchant, NOW + 27 * DAY) == []  # the 120 paid a3 (due first), then a1
    assert await from_rollup(merchant, NOW + 31 * DAY) == [(alice.id, 2_000, NOW + 30 * DAY, 7_000, 100_000)]
    # A refund of the first charge gives its repayment to the next charge due.
    refunded = await buy(shop, "b1", 8_000, credit_fen=8_000, member=bob, now=NOW + 21 * DAY)
    await buy(shop, "b2", 2_000, credit_fen=2_000, member=bob, now=NOW + 22 * DAY)
    await repay(shop, 3_000, "br", member=bob, now=NOW + 23 * DAY)
    await refund_purchase(merchant, None, refunded.purchase_id, key="bx", now=NOW + 24 * DAY, effects=EFFECTS)
    await assert_exact(merchant, 24, 26.5, 27.5, 45)
    assert (await from_rollup(merchant, NOW + 45 * DAY))[1:] == []  # bob: 50 of b1 reversed, 30 paid b2
    # The time part is read from the stored due dates: nothing was written between these answers.
    assert [r[1] for r in await from_rollup(merchant, NOW + 26 * DAY)] == []
    assert [r[1] for r in await from_rollup(merchant, NOW + 40.5 * DAY)] == [7_000]
    # As of a past moment the later entries are left out (the ledger answers for those members).
    assert await from_rollup(merchant, NOW + 15 * DAY) == []
    assert await from_rollup(merchant, NOW + 22.5 * DAY) == await from_ledger(merchant, NOW + 22.5 * DAY)
    assert await overdue.next_due(merchant, alice.id, NOW + 45 * DAY) == NOW + 30 * DAY
    assert await overdue.next_due(merchant, alice.id, NOW + 20.5 * DAY) == NOW + 40 * DAY
    assert await overdue.next_due(merchant, bob.id, NOW + 45 * DAY) is None


async def test_concurrent_charges_and_repayments_on_one_member_keep_the_rollup_exact(shop: Any) -> None:
    merchant, _ = shop
    await limit(shop, 30_000)
    await buy(shop, "seed", 10_000, credit_fen=10_000)

    async def one(i: int) -> None:
        at = NOW + i * timedelta(hours=7)  # due dates spread over 40 days, not in the order of writing
        try:
            if i % 3 == 0:
                await repay(shop, 900, f"r{i}", now=at)
            else:
                await buy(shop, f"c{i}", 1_300, credit_fen=1_300, now=at)
        except (credit.CreditLimitExceeded, credit.Overpaid):
            pass

    await asyncio.gather(*(one(i) for i in range(120)))
    await assert_exact(merchant, 35, 45, 55, 80)
    figures = await from_rollup(merchant, NOW + 80 * DAY)
    assert figures and figures[0][1] == figures[0][3]  # everything is due by then: overdue = owed


async def test_the_audit_reports_a_rollup_that_drifted_from_the_ledger(shop: Any) -> None:
    merchant, member = shop
    await limit(shop, 10_000)
    first = await buy(shop, "p1", 4_000, credit_fen=4_000)
    await buy(shop, "p2", 3_000, credit_fen=3_000, now=NOW + DAY)
    assert await audit_rollup() == []
    charge = await queries.fetch_one(
        "SELECT id FROM credit_entry WHERE purchase_id = :p", p=first.purchase_id
    )
    await queries.fetch_rows("UPDATE credit_due SET remaining_fen = 100 WHERE charge_id = :c", c=charge["id"])
    await queries.fetch_rows("DELETE FROM credit_rollup WHERE member_id = :m", m=member.id)
    found = {(m.check, m.expected, m.actual) for m in await audit_credit(merchant.id)}
    assert found == {
        (f"rollup: what is left of charge {charge['id']} (first in, first out)", 4_000, 100),
        ("rollup: the time of the latest entry", int((NOW + DAY).timestamp()), 0),
    }
    await queries.fetch_one("SELECT memberbot_credit_rollup(ARRAY[CAST(:m AS bigint)])", m=member.id)
    await queries.fetch_rows(
        "UPDATE credit_rollup SET open_fen = 1, last_due_at = NULL WHERE member_id = :m", m=member.id
    )
    found = {(m.check, m.expected, m.actual) for m in await audit_credit(merchant.id)}
    assert found == {
        ("rollup: what is left of the open charges", 7_000, 1),
        ("rollup: the latest due date", int((NOW + 31 * DAY).timestamp()), 0),
    }
    await queries.fetch_one("SELECT memberbot_credit_rollup(ARRAY[CAST(:m AS bigint)])", m=member.id)
    assert await audit_credit() == []


async def test_the_merchant_wide_list_reads_the_replica_and_a_members_page_the_primary(
    aiohttp_client: Any, make_app: Any, database_url: str
) -> None:
    replica = await _replica_database(database_url)  # migrated and empty: no credit at all
    app_client = await aiohttp_client(make_app(database_read_url=replica))
    merchant = await make_merchant()
    member = await make_member(merchant)
    await credit.set_limit(merchant, member.id, 10_000, key="l", now=NOW, actor="staff:1")
    await buy((merchant, member), "p", 5_000, credit_fen=5_000, now=NOW - 40 * DAY)
    admin = await staff_headers(app_client, merchant, "admin", "replica-admin")
    listed = await app_client.get(
        "/api/admin/credit/overdue", params={"as_of": NOW.isoformat()}, headers=admin
    )
    assert listed.status == 200 and (await listed.json())["items"] == []
    page = await app_client.get(f"/api/admin/members/{member.id}", headers=admin)
    assert page.status == 200 and (await page.json())["credit"]["overdue_fen"] == 5_000
