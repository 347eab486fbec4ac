"""Console pages of the members over HTTP: search, the member's page, grants, blocking, notes, export."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from handlers.till import purchase as purchases
from models.loyalty import AuditLog
from models.member import Member
from models.merchant import Merchant, Store
from models.points import PointsAccount, PointsTransaction
from tests.support.console import login, make_staff, page_csrf
from tests.support.factories import EFFECTS as TASKS
from tests.support.factories import make_member, make_merchant
from webhooks.appkeys import EFFECTS


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    await make_member(merchant, "o-1", name="张三", phone="13800000001")
    await make_member(merchant, "o-2", name="李四", phone="13800000002")
    await make_member(merchant, "o-3", name="张别店", phone="13800000003")  # no store: not mona's
    main = await Store.get(merchant_id=merchant.id, code="main")
    await Member.filter(merchant_id=merchant.id, name__in=["张三", "李四"]).update(store_id=main.id)
    assert (await login(client, "shop", "mona")).status == 303
    return merchant


async def member(name: str) -> Member:
    return await Member.get(name=name)


async def test_search_by_phone_name_and_code(client: TestClient, shop: Merchant) -> None:
    zhang = await member("张三")
    html = await (await client.get("/admin/members?phone=13800000001")).text()
    assert zhang.code in html and "李四" not in html
    assert "<td>138****0001</td>" in html and "<td>13800000001</td>" not in html  # listed masked
    html = await (await client.get("/admin/members?name=李")).text()
    assert "李四" in html and "张三" not in html
    html = await (await client.get("/admin/members?name=张")).text()
    assert "张三" in html and "张别店" not in html  # a manager sees their store's members
    html = await (await client.get(f"/admin/members?code={zhang.code}")).text()
    assert f'href="/admin/members/{zhang.id}"' in html


async def test_a_bad_filter_is_named_and_kept(client: TestClient, shop: Merchant) -> None:
    response = await client.get("/admin/members?tier=bad%20tier&name=张")
    assert response.status == 400
    html = await response.text()
    assert 'data-field="tier"' in html
    assert 'name="tier" value="bad tier"' in html and 'name="name" value="张"' in html


async def test_the_member_page_shows_the_profile_and_assets(client: TestClient, shop: Merchant) -> None:
    zhang = await member("张三")
    html = await (await client.get(f"/admin/members/{zhang.id}")).text()
    assert "张三" in html and "138****0001" in html and zhang.code in html
    assert (await client.get("/admin/members/999999")).status == 404


async def grant(client: TestClient, who: Member, **fields: str) -> Any:
    page = await client.get(f"/admin/members/{who.id}")
    html = await page.text()
    key = re.search(r'name="key" value="([0-9a-f]+)"', html)
    assert key
    data = {"csrf_token": await page_csrf(client), "key": key.group(1), **fields}
    return await client.post(f"/admin/members/{who.id}/points", data=data, allow_redirects=False), data


async def test_grant_and_deduct_points_with_a_reason_once_per_form(
    client: TestClient, shop: Merchant
) -> None:
    zhang = await member("张三")
    response, data = await grant(client, zhang, delta="120", reason="补偿")
    assert response.status == 303
    assert response.headers["Location"] == f"/admin/members/{zhang.id}?done=grant"
    again = await client.post(f"/admin/members/{zhang.id}/points", data=data, allow_redirects=False)
    assert again.status == 303  # the same form resubmitted: replayed, not posted twice
    assert (await PointsAccount.get(member_id=zhang.id)).balance == 120
    response, _ = await grant(client, zhang, delta="-20", reason="误操作")
    assert response.status == 303
    assert (await PointsAccount.get(member_id=zhang.id)).balance == 100
    rows = await PointsTransaction.filter(member_id=zhang.id).order_by("id").values_list("delta", flat=True)
    assert rows == [120, -20]
    html = await (await client.get(f"/admin/members/{zhang.id}?done=grant")).text()
    assert "积分已调整" in html and 'data-value="points">100<' in html


async def test_a_refused_grant_keeps_the_input_with_the_error_next_to_the_field(
    client: TestClient, shop: Merchant
) -> None:
    zhang = await member("张三")
    response, _ = await grant(client, zhang, delta="abc", reason="补偿")
    assert response.status == 400
    html = await response.text()
    assert 'data-field="grant.delta"' in html
    assert 'name="delta" value="abc"' in html and 'name="reason" value="补偿"' in html
    response, _ = await grant(client, zhang, delta="-5", reason="扣减")
    assert response.status == 400
    assert 'data-field="grant.delta">积分不足' in await response.text()
    assert not await PointsTransaction.filter(member_id=zhang.id).exists()


async def test_block_unblock_and_notes_are_audited(client: TestClient, shop: Merchant) -> None:
    zhang = await member("张三")
    token = await page_csrf(client)
    refused = await client.post(f"/admin/members/{zhang.id}/block", data={"csrf_token": token, "reason": ""})
    assert refused.status == 400
    assert 'data-field="block.reason"' in await refused.text()
    done = await client.post(
        f"/admin/members/{zhang.id}/block",
        data={"csrf_token": token, "reason": "恶意退货"},
        allow_redirects=False,
    )
    assert done.status == 303
    assert (await member("张三")).blocked_reason == "恶意退货"
    await client.post(f"/admin/members/{zhang.id}/unblock", data={"csrf_token": token})
    assert (await member("张三")).blocked_at is None
    await client.post(
        f"/admin/members/{zhang.id}/notes", data={"csrf_token": token, "text": "电话回访，满意"}
    )
    html = await (await client.get(f"/admin/members/{zhang.id}")).text()
    assert "电话回访，满意" in html
    actions = await AuditLog.filter(merchant_id=shop.id).values_list("action", flat=True)
    assert {"member.block", "member.unblock", "member.note"} <= set(actions)


async def test_a_member_post_without_the_token_changes_nothing(client: TestClient, shop: Merchant) -> None:
    zhang = await member("张三")
    response = await client.post(f"/admin/members/{zhang.id}/block", data={"reason": "x"})
    assert response.status == 403
    assert (await member("张三")).blocked_at is None


async def test_export_csv_of_the_search(client: TestClient, shop: Merchant) -> None:
    response = await client.get("/admin/members/export.csv?name=张")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    body = (await response.read()).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    assert len(rows) == 2 and rows[1][rows[0].index("姓名")] == "张三"
    assert "138****0001" in body and "13800000001" not in body
    assert await AuditLog.filter(merchant_id=shop.id, action="members.export").exists()


CSV = (
    "会员号,手机号,姓名,积分\nV001,13900000001,王五,100\nV002,13900000002,赵六,50\nV003,12345,坏号码,0\n"
).encode()


async def import_file(client: TestClient, dry_run: bool) -> Any:
    token = await page_csrf(client, "/admin/members/import")
    form = aiohttp.FormData()
    form.add_field("file", CSV, filename="会员.csv", content_type="text/csv")
    if dry_run:
        form.add_field("dry_run", "true")
    return await client.post(f"/admin/members/import?csrf_token={token}", data=form, allow_redirects=False)


async def finished(client: TestClient, location: str) -> str:
    """The job's page once its background task is done (the test runs what is due, as a worker would)."""
    for _ in range(200):
        await client.app[EFFECTS].run_due(datetime.now(UTC))
        html = await (await client.get(location)).text()
        if 'data-status="done"' in html:
            return html
        await asyncio.sleep(0.05)
    raise AssertionError(f"{location} did not finish")


async def test_import_a_dry_run_then_for_real(client: TestClient, shop: Merchant) -> None:
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "alice")).status == 303
    response = await import_file(client, dry_run=True)
    assert response.status == 303, await response.text()
    html = await finished(client, response.headers["Location"])
    assert 'data-count="created">2<' in html and 'data-count="rejected">1<' in html
    assert "试运行" in html and "<td>4</td>" in html  # the refused row, as the spreadsheet numbers it
    assert not await Member.filter(external_id__in=["V001", "V002"]).exists()
    report = await client.get(response.headers["Location"] + "/report.csv")
    assert report.status == 200 and "V003" in (await report.read()).decode("utf-8-sig")
    real = await import_file(client, dry_run=False)
    html = await finished(client, real.headers["Location"])
    assert 'data-count="created">2<' in html
    wang = await Member.get(external_id="V001")
    assert (await PointsAccount.get(member_id=wang.id)).balance == 100
    again = await import_file(client, dry_run=False)
    html = await finished(client, again.headers["Location"])
    assert 'data-count="unchanged">2<' in html and 'data-count="created">0<' in html


async def test_managers_cannot_import(client: TestClient, shop: Merchant) -> None:
    response = await client.get("/admin/members/import")
    assert response.status == 403
    assert "管理员" in await response.text()


async def test_an_upload_without_a_file_is_named(client: TestClient, shop: Merchant) -> None:
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "alice")).status == 303
    token = await page_csrf(client, "/admin/members/import")
    form = aiohttp.FormData()
    form.add_field("dry_run", "true")
    response = await client.post(f"/admin/members/import?csrf_token={token}", data=form)
    assert response.status == 400
    assert 'data-field="file"' in await response.text()
    no_token = aiohttp.FormData()
    no_token.add_field("file", CSV, filename="会员.csv", content_type="text/csv")
    assert (await client.post("/admin/members/import", data=no_token)).status == 403


async def test_credit_limit_and_the_overdue_warning(client: TestClient, shop: Merchant) -> None:
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "alice")).status == 303
    zhang = await member("张三")
    page = await (await client.get(f"/admin/members/{zhang.id}")).text()
    key = re.search(r'name="key" value="([0-9a-f]+)">\s*<label>额度', page)
    assert key
    token = await page_csrf(client)
    form = {"csrf_token": token, "key": key.group(1), "limit": "200", "reason": "老客户"}
    done = await client.post(f"/admin/members/{zhang.id}/credit-limit", data=form, allow_redirects=False)
    assert done.status == 303, await done.text()
    bad = await client.post(
        f"/admin/members/{zhang.id}/credit-limit", data={**form, "key": "k2", "limit": "-1"}
    )
    assert bad.status == 400 and 'data-field="credit.limit_fen"' in await bad.text()
    request = purchases.PurchaseRequest("c1", zhang.id, 5_000, credit_fen=5_000)
    then = datetime.now(UTC) - timedelta(days=40)  # due after the default 30 days: 10 days overdue
    await purchases.record_purchase(shop, None, request, now=then, effects=TASKS)
    html = await (await client.get("/admin/credit")).text()
    assert f'href="/admin/members/{zhang.id}"' in html and 'data-value="overdue-total">50.00<' in html
    assert "<td>10</td>" in html
    assert 'data-warning="credit">1<' in await (await client.get("/admin/")).text()
    member_page = await (await client.get(f"/admin/members/{zhang.id}")).text()
    assert "逾期 50.00 元" in member_page and "赊账消费" in member_page
    csv_body = await (await client.get("/admin/credit/overdue.csv")).read()
    assert zhang.code.encode() in csv_body


async def test_edit_the_profile_by_the_members_own_rules(client: TestClient, shop: Merchant) -> None:
    zhang = await member("张三")
    token = await page_csrf(client)
    bad = await client.post(
        f"/admin/members/{zhang.id}/profile",
        data={"csrf_token": token, "name": "", "phone": "12345", "birthday": "", "gender": ""},
    )
    assert bad.status == 400
    text = await bad.text()
    assert 'data-field="profile.phone"' in text and 'name="phone" value="12345"' in text
    assert (await member("张三")).phone == "13800000001"
    done = await client.post(
        f"/admin/members/{zhang.id}/profile",
        data={"csrf_token": token, "name": "张三丰", "phone": "", "birthday": "1990-05-20", "gender": "male"},
        allow_redirects=False,
    )
    assert done.status == 303, await done.text()
    changed = await Member.get(id=zhang.id)
    assert (changed.name, str(changed.birthday), changed.gender, changed.phone) == (
        "张三丰",
        "1990-05-20",
        "male",
        "13800000001",
    )
    assert await AuditLog.filter(merchant_id=shop.id, action__contains="profile").exists()
