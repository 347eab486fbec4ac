"""Exporting a member search: exact CSV, a readable XLSX, streamed in keyset batches, full phones for
admins only and every export audited."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import ClientPayloadError
from aiohttp.test_utils import TestClient
from openpyxl import load_workbook

from handlers.directory import export, search
from models.loyalty import AuditLog
from models.staff import Staff
from tests.support.factories import make_merchant, staff_headers
from tests.test_member_search import Seeded, local, member_with, seed

HEADER = "会员号,原会员号,姓名,手机号,性别,生日,等级,积分,累计消费（元）,注册时间,最近到店,来源,门店,状态"


@pytest.fixture
async def seeded(client: TestClient) -> Seeded:
    return await seed(await make_merchant())


def expected_lines(s: Seeded, *, full: bool) -> list[str]:
    def phone(n: int) -> str:
        return f"1380000000{n}" if full else f"138****000{n}"

    code = {name: member.code for name, member in s.by_name.items()}
    rows = [
        [code["zhangsan"], "", "张三", phone(1), "男", "1990-05-20", "普通会员", "300", "123.45",
         "2024-01-10 09:00", "2024-06-01 18:00", "关注公众号", "总店", "正常"],
        [code["zhangwei"], "VIP-0007", "张伟", phone(2), "", "", "银卡", "1200", "500.00",
         "2024-02-15 12:00", "2024-05-01 12:00", "关注公众号", "东区店", "正常"],
        [code["lisi"], "", "李四", phone(3), "", "", "普通会员", "0", "0.00",
         "2024-03-01 12:00", "", "关注公众号", "", "已冻结"],
        [code["zhangli"], "", "Zhang Li", phone(4), "", "", "金卡", "50", "500.00",
         "2024-03-20 12:00", "2024-06-01 10:00", "关注公众号", "", "正常"],
        [code["percent"], "", "100%纯", "", "", "", "普通会员", "7", "0.01",
         "2024-03-31 23:00", "2024-04-30 23:00", "关注公众号", "", "正常"],
    ]  # fmt: skip
    return [HEADER, *(",".join(row) for row in rows)]


async def download(client: TestClient, headers: dict[str, str], **query: Any) -> Any:
    return await client.get(f"/api/admin/members/export?{urlencode(query)}", headers=headers)


async def test_csv_is_the_search_result_with_phones_masked(client: TestClient, seeded: Seeded) -> None:
    admin = await staff_headers(client, seeded.shop, "admin")
    response = await download(client, admin, sort="registered_at", order="asc")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="members-')
    assert response.headers["Content-Disposition"].endswith('.csv"')
    assert "Content-Length" not in response.headers  # streamed: chunked, the size unknown up front
    body = await response.read()
    assert body.startswith("\ufeff".encode())
    assert body.decode("utf-8-sig").split("\r\n") == [*expected_lines(seeded, full=False), ""]
    filtered = await download(
        client, admin, tier="normal", blocked="false", sort="registered_at", order="asc"
    )
    lines = (await filtered.read()).decode("utf-8-sig").split("\r\n")
    assert lines == [HEADER, expected_lines(seeded, full=False)[1], expected_lines(seeded, full=False)[5], ""]


async def test_xlsx_opens_with_the_same_rows(client: TestClient, seeded: Seeded) -> None:
    admin = await staff_headers(client, seeded.shop, "admin")
    response = await download(client, admin, format="xlsx", sort="registered_at", order="asc")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == export.MEDIA_TYPES["xlsx"]
    sheet = load_workbook(io.BytesIO(await response.read()), read_only=True)["会员"]
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    expected = [line.split(",") for line in expected_lines(seeded, full=False)]
    assert rows[0] == expected[0]
    assert len(rows) == 6
    for got, want in zip(rows[1:], expected[1:], strict=True):
        text = ["" if value is None else value for value in got]
        assert text[7] == int(want[7]) and text[8] == float(want[8])  # points and spend are numbers
        assert [str(v) for i, v in enumerate(text) if i not in (7, 8)] == [
            v for i, v in enumerate(want) if i not in (7, 8)
        ]


async def test_the_export_is_fetched_in_keyset_batches(
    client: TestClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await staff_headers(client, seeded.shop, "admin")
    calls: list[tuple[str | None, int]] = []
    real_page = search.page

    async def counted(
        found: search.Plan, *, cursor: str | None = None, limit: int = 50, replica: bool = False
    ) -> search.Page:
        assert replica  # an export reads the read connection (DATABASE_READ_URL, when set)
        calls.append((cursor, limit))
        return await real_page(found, cursor=cursor, limit=limit, replica=replica)

    monkeypatch.setattr(export, "EXPORT_BATCH", 2)
    monkeypatch.setattr(search, "page", counted)
    for kind in ("csv", "xlsx"):
        calls.clear()
        response = await download(client, admin, format=kind)
        assert response.status == 200
        await response.read()
        assert [limit for _, limit in calls] == [2, 2, 2]  # 2 + 2 + 1 members, one query each
        assert calls[0][0] is None and None not in [cursor for cursor, _ in calls[1:]]


async def test_a_failure_after_the_export_started_cuts_the_download(
    client: TestClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await staff_headers(client, seeded.shop, "admin")
    real_page = search.page

    async def failing(found: search.Plan, *, cursor: str | None = None, limit: int = 50) -> search.Page:
        if cursor is not None:
            raise ConnectionError("the database went away")
        return await real_page(found, cursor=cursor, limit=limit)

    monkeypatch.setattr(export, "EXPORT_BATCH", 2)
    monkeypatch.setattr(search, "page", failing)
    for kind in ("csv", "xlsx"):
        response = await download(client, admin, format=kind)
        assert response.status == 200  # the status line went out with the first batch
        with pytest.raises(ClientPayloadError):
            await response.read()


async def test_full_phones_are_for_admins_and_every_export_is_audited(
    client: TestClient, seeded: Seeded
) -> None:
    manager = await staff_headers(client, seeded.shop, "manager")
    admin = await staff_headers(client, seeded.shop, "admin")
    refused = await download(client, manager, full_phone="true")
    assert refused.status == 403
    assert (await refused.json())["error"] == {
        "code": "forbidden",
        "message": "导出完整手机号需要管理员权限",
        "field": "full_phone",
    }
    assert await AuditLog.filter(action="members.export").count() == 0
    full = await download(client, admin, full_phone="true", sort="registered_at", order="asc")
    assert (await full.read()).decode("utf-8-sig").split("\r\n")[:-1] == expected_lines(seeded, full=True)
    scoped = await download(client, manager, phone="13800000002", format="xlsx")  # 张伟 is the east store's
    assert scoped.status == 200
    assert [r for r in load_workbook(io.BytesIO(await scoped.read()), read_only=True)["会员"].iter_rows()][
        1:
    ] == []
    rows = await AuditLog.filter(action="members.export").order_by("id")
    admin_id = (await Staff.get(username="admin-user")).id
    manager_id = (await Staff.get(username="manager-user")).id
    assert [(row.actor, row.subject, row.detail) for row in rows] == [
        (
            f"staff:{admin_id}",
            "members",
            {"format": "csv", "full_phone": True, "filters": {}, "sort": "registered_at:asc"},
        ),
        (
            f"staff:{manager_id}",
            "members",
            {
                "format": "xlsx",
                "full_phone": False,
                "filters": {"phone": "138****0002", "store_id": seeded.main.id},
                "sort": "registered_at:desc",
            },
        ),
    ]


async def test_cells_a_spreadsheet_would_run_are_defused(client: TestClient) -> None:
    shop = await make_merchant()
    await member_with(shop, "o-formula", name="=HYPERLINK(1)", registered_at=local("2024-01-01"))
    admin = await staff_headers(client, shop, "admin")
    body = (await (await download(client, admin)).read()).decode("utf-8-sig")
    assert ",,'=HYPERLINK(1)," in body.split("\r\n")[1]
    cashier = await staff_headers(client, shop, "cashier")
    assert (await download(client, cashier)).status == 403
