"""Credit over HTTP: the manager's limit (audited), purchases on credit and their refund at the till,
repayments, the overdue list (JSON and CSV, a manager's store only), the setting, the member page."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openpyxl import load_workbook

from handlers.credit import ledger as credit
from handlers.credit.audit import audit_credit
from handlers.till.purchase import PurchaseRequest, record_purchase
from models.credit import CreditAccount
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant, Store
from tests.support.factories import EFFECTS, make_member, make_merchant, staff_headers
from tests.test_wallet_api import member_headers

NOW = datetime.now(UTC)


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await make_merchant()


@pytest.fixture
async def member(shop: Merchant) -> Member:
    main = await Store.get(merchant_id=shop.id, code="main")
    return await make_member(shop, name="王芳", phone="13912345678", store_id=main.id)


@pytest.fixture
async def manager(client: TestClient, shop: Merchant) -> dict[str, str]:
    return await staff_headers(client, shop, "manager")


@pytest.fixture
async def cashier(client: TestClient, shop: Merchant) -> dict[str, str]:
    return await staff_headers(client, shop, "cashier")


async def set_limit(client: TestClient, headers: dict[str, str], member: Member, fen: int, key: str) -> Any:
    return await client.put(
        f"/api/admin/members/{member.id}/credit-limit",
        json={"limit_fen": fen, "reason": "老客户", "idempotency_key": key},
        headers=headers,
    )


async def test_a_manager_sets_the_limit_audited_and_a_cashier_cannot(
    client: TestClient, shop: Merchant, member: Member, manager: dict[str, str], cashier: dict[str, str]
) -> None:
    response = await set_limit(client, manager, member, 50_000, "k1")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert {
        k: body[k] for k in ("limit_fen", "previous_limit_fen", "owed_fen", "available_fen", "replayed")
    } == {
        "limit_fen": 50_000,
        "previous_limit_fen": 0,
        "owed_fen": 0,
        "available_fen": 50_000,
        "replayed": False,
    }
    log = await AuditLog.get(merchant_id=shop.id, action="credit.limit")
    assert log.subject == f"member:{member.id}" and log.detail["limit_fen"] == 50_000
    assert (await set_limit(client, cashier, member, 90_000, "k2")).status == 403
    again = await set_limit(client, manager, member, 50_000, "k1")
    assert (await again.json())["replayed"] is True
    assert await AuditLog.filter(action="credit.limit").count() == 1


async def test_the_till_charges_credit_refuses_over_the_limit_and_the_refund_reverses_it(
    client: TestClient, member: Member, manager: dict[str, str], cashier: dict[str, str]
) -> None:
    await set_limit(client, manager, member, 10_000, "k1")
    card = await (
        await client.post("/api/staff/scan", json={"member_code": member.code}, headers=cashier)
    ).json()
    assert (card["credit_limit_fen"], card["credit_owed_fen"], card["credit_available_fen"]) == (
        10_000,
        0,
        10_000,
    )
    bought = await client.post(
        "/api/staff/purchases",
        json={"idempotency_key": "p1", "member_id": member.id, "amount_fen": 8_000, "credit_fen": 8_000},
        headers=cashier,
    )
    assert bought.status == 200, await bought.text()
    purchase = await bought.json()
    assert purchase["credit_fen"] == 8_000 and purchase["paid_fen"] == 8_000
    over = await client.post(
        "/api/staff/purchases",
        json={"idempotency_key": "p2", "member_id": member.id, "amount_fen": 3_000, "credit_fen": 3_000},
        headers=cashier,
    )
    card = await (
        await client.post("/api/staff/scan", json={"member_code": member.code}, headers=cashier)
    ).json()
    assert (card["credit_limit_fen"], card["credit_owed_fen"], card["credit_available_fen"]) == (
        10_000,
        8_000,
        2_000,
    )
    assert over.status == 409
    assert (await over.json())["error"] == {
        "code": "credit_limit_exceeded",
        "message": "信用额度不足：本次赊账 30.00 元，可用额度 20.00 元",
        "field": "credit_fen",
    }
    lower = await set_limit(client, manager, member, 7_999, "k2")
    assert lower.status == 409
    assert (await lower.json())["error"] == {
        "code": "credit_below_owed",
        "message": "信用额度 limit_fen 不能低于会员当前欠款 80.00 元，请先还款再调低额度",
        "field": "limit_fen",
    }
    refund = await client.post(
        f"/api/staff/purchases/{purchase['purchase_id']}/refund",
        json={"idempotency_key": "r1"},
        headers=cashier,
    )
    assert refund.status == 200, await refund.text()
    refunded = await refund.json()
    assert (refunded["credit_reversed_fen"], refunded["credit_cash_back_fen"]) == (8_000, 0)
    account = await CreditAccount.get(member_id=member.id)
    assert (account.balance_fen, account.limit_fen) == (0, 10_000)
    assert await audit_credit() == []


async def test_repayment_at_the_till_is_idempotent_and_not_above_what_is_owed(
    client: TestClient, shop: Merchant, member: Member, manager: dict[str, str], cashier: dict[str, str]
) -> None:
    await set_limit(client, manager, member, 10_000, "k1")
    request = PurchaseRequest("p1", member.id, 6_000, credit_fen=6_000)
    await record_purchase(shop, None, request, now=NOW, effects=EFFECTS)
    body = {
        "member_code": member.code,
        "amount_fen": 2_500,
        "payment_method": "wechat",
        "idempotency_key": "r1",
    }
    first = await client.post("/api/staff/credit/repayments", json=body, headers=cashier)
    assert first.status == 200, await first.text()
    paid = await first.json()
    assert (paid["amount_fen"], paid["owed_fen"], paid["limit_fen"], paid["replayed"]) == (
        2_500,
        3_500,
        10_000,
        False,
    )
    again = await client.post("/api/staff/credit/repayments", json=body, headers=cashier)
    assert (await again.json())["replayed"] is True and (await again.json())["entry_id"] == paid["entry_id"]
    over = await client.post(
        "/api/staff/credit/repayments",
        json={**body, "amount_fen": 3_501, "idempotency_key": "r2"},
        headers=cashier,
    )
    assert over.status == 409 and (await over.json())["error"]["code"] == "credit_overpaid"
    missing = await client.post(
        "/api/staff/credit/repayments",
        json={**body, "member_code": None, "idempotency_key": "r3"},
        headers=cashier,
    )
    assert missing.status == 400
    assert (await CreditAccount.get(member_id=member.id)).balance_fen == 3_500


async def test_overdue_list_json_csv_and_a_managers_store_only(
    client: TestClient, shop: Merchant, member: Member, manager: dict[str, str]
) -> None:
    admin = await staff_headers(client, shop, "admin")
    north = await Store.create(merchant=shop, code="north", name="北店")
    other = await make_member(shop, openid="o-north", name="李雷", store_id=north.id)
    for who in (member, other):
        await credit.set_limit(shop, who.id, 100_000, key=f"l{who.id}", now=NOW, actor="staff:1")
    long_ago = NOW - timedelta(days=40)
    for key, who, fen in (("a", member, 12_000), ("b", other, 7_000)):
        request = PurchaseRequest(key, who.id, fen, credit_fen=fen)
        await record_purchase(shop, None, request, now=long_ago, effects=EFFECTS)
    await credit.repay(shop, member.id, 2_000, key="r", payment_method="cash", now=NOW, actor="staff:1")
    as_of = NOW.isoformat()

    response = await client.get("/api/admin/credit/overdue", params={"as_of": as_of}, headers=admin)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["overdue_days"], body["total_overdue_fen"]) == (30, 17_000)
    assert [
        (i["member_id"], i["overdue_fen"], i["days_overdue"], i["owed_fen"], i["phone"])
        for i in body["items"]
    ] == [
        (member.id, 10_000, 10, 10_000, "139****5678"),
        (other.id, 7_000, 10, 7_000, ""),
    ]
    scoped = await (
        await client.get("/api/admin/credit/overdue", params={"as_of": as_of}, headers=manager)
    ).json()
    assert [i["member_id"] for i in scoped["items"]] == [member.id]  # the manager of "main"
    north_only = await client.get(
        "/api/admin/credit/overdue", params={"as_of": as_of, "store_id": north.id}, headers=admin
    )
    assert [i["member_id"] for i in (await north_only.json())["items"]] == [other.id]
    forbidden = await client.get("/api/admin/credit/overdue", params={"store_id": north.id}, headers=manager)
    assert forbidden.status == 403
    naive = await client.get(
        "/api/admin/credit/overdue", params={"as_of": "2026-12-01T00:00:00"}, headers=admin
    )
    assert naive.status == 400

    csv = await client.get("/api/admin/credit/overdue.csv", params={"as_of": as_of}, headers=manager)
    assert csv.status == 200 and csv.headers["Content-Type"].startswith("text/csv")
    lines = (await csv.text()).lstrip("\ufeff").splitlines()
    assert lines[0] == "会员号,姓名,手机号,逾期金额（元）,最早到期,逾期天数,欠款（元）,信用额度（元）"
    assert len(lines) == 2 and lines[1].startswith(f"{member.code},王芳,139****5678,100.00,")
    assert lines[1].endswith(",10,100.00,1000.00")

    xlsx = await client.get("/api/admin/credit/overdue.xlsx", params={"as_of": as_of}, headers=admin)
    assert xlsx.status == 200 and xlsx.headers["Content-Type"].startswith("application/vnd.openxmlformats")
    sheet = load_workbook(io.BytesIO(await xlsx.read()), read_only=True)["信用预警"]
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert rows[0] == lines[0].split(",")
    assert [(r[0], r[1], r[2], r[3], r[5], r[6], r[7]) for r in rows[1:]] == [
        (member.code, "王芳", "139****5678", 100, 10, 100, 1000),
        (other.code, "李雷", None, 70, 10, 70, 1000),
    ]


async def test_the_overdue_setting_is_admins_and_audited(
    client: TestClient, shop: Merchant, manager: dict[str, str]
) -> None:
    admin = await staff_headers(client, shop, "admin")
    assert (await (await client.get("/api/admin/credit/settings", headers=manager)).json()) == {
        "overdue_days": 30
    }
    assert (
        await client.put("/api/admin/credit/settings", json={"overdue_days": 15}, headers=manager)
    ).status == 403
    changed = await client.put("/api/admin/credit/settings", json={"overdue_days": 15}, headers=admin)
    assert changed.status == 200 and await changed.json() == {"overdue_days": 15}
    assert (await (await client.get("/api/admin/credit/settings", headers=manager)).json()) == {
        "overdue_days": 15
    }
    assert (
        await client.put("/api/admin/credit/settings", json={"overdue_days": 0}, headers=admin)
    ).status == 400
    log = await AuditLog.get(merchant_id=shop.id, action="credit.settings")
    assert log.detail == {"overdue_days": 15, "previous_overdue_days": 30}


async def test_the_member_page_shows_the_credit_account_and_its_ledger(
    client: TestClient, shop: Merchant, member: Member, manager: dict[str, str]
) -> None:
    await set_limit(client, manager, member, 20_000, "k1")
    old = PurchaseRequest("p0", member.id, 3_000, credit_fen=3_000)
    await record_purchase(shop, None, old, now=NOW - timedelta(days=31), effects=EFFECTS)
    new = PurchaseRequest("p1", member.id, 5_000, credit_fen=4_000)
    await record_purchase(shop, None, new, now=NOW, effects=EFFECTS)
    await credit.repay(shop, member.id, 1_000, key="r", payment_method="cash", now=NOW, actor="staff:1")
    page = await (await client.get(f"/api/admin/members/{member.id}", headers=manager)).json()
    assert page["credit"] == {
        "limit_fen": 20_000,
        "owed_fen": 6_000,
        "available_fen": 14_000,
        "overdue_fen": 2_000,
    }
    ledger = page["credit_ledger"]
    assert [(e["kind"], e["kind_label"], e["amount_fen"], e["balance_after"]) for e in ledger["items"]] == [
        ("repay", "还款", -1_000, 6_000),
        ("charge", "赊账消费", 4_000, 7_000),
        ("charge", "赊账消费", 3_000, 3_000),
        ("limit_change", "调整额度", 0, 0),
    ]
    assert ledger["next_cursor"] is None
    first = await client.get(
        f"/api/admin/members/{member.id}/credit-ledger", params={"limit": 2}, headers=manager
    )
    body = await first.json()
    assert [e["kind"] for e in body["items"]] == ["repay", "charge"] and body["next_cursor"] is not None
    rest = await client.get(
        f"/api/admin/members/{member.id}/credit-ledger",
        params={"limit": 2, "cursor": body["next_cursor"]},
        headers=manager,
    )
    assert [e["kind"] for e in (await rest.json())["items"]] == ["charge", "limit_change"]


async def test_the_member_reads_their_own_credit_in_the_mini_program(
    client: TestClient, shop: Merchant, member: Member, manager: dict[str, str]
) -> None:
    url = f"/api/mp/{shop.slug}/credit"
    headers = await member_headers(client, shop, member)
    nothing = await (await client.get(url, headers=headers)).json()
    assert nothing == {
        "limit_fen": 0,
        "owed_fen": 0,
        "available_fen": 0,
        "overdue_fen": 0,
        "next_due_at": None,
        "entries": [],
    }
    await set_limit(client, manager, member, 20_000, "k1")
    old = PurchaseRequest("p0", member.id, 3_000, credit_fen=3_000)
    await record_purchase(shop, None, old, now=NOW - timedelta(days=31), effects=EFFECTS)
    new = PurchaseRequest("p1", member.id, 4_000, credit_fen=4_000)
    await record_purchase(shop, None, new, now=NOW, effects=EFFECTS)
    mine = await (await client.get(url, params={"limit": 2}, headers=headers)).json()
    assert {k: mine[k] for k in ("limit_fen", "owed_fen", "available_fen", "overdue_fen")} == {
        "limit_fen": 20_000,
        "owed_fen": 7_000,
        "available_fen": 13_000,
        "overdue_fen": 3_000,
    }
    assert datetime.fromisoformat(mine["next_due_at"]) == NOW - timedelta(days=1)
    assert [(e["kind"], e["amount_fen"]) for e in mine["entries"]] == [("charge", 4_000), ("charge", 3_000)]
    await credit.repay(shop, member.id, 3_000, key="r", payment_method="cash", now=NOW, actor="staff:1")
    paid = await (await client.get(url, headers=headers)).json()
    assert (paid["owed_fen"], paid["overdue_fen"]) == (4_000, 0)
    assert datetime.fromisoformat(paid["next_due_at"]) == NOW + timedelta(days=30)
    assert (await client.get(url)).status == 401
