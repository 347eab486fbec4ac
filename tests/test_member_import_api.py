"""Member import over HTTP (multipart upload, the background task, progress, the CSV report) and the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from bot.settings import Settings
from handlers.core import sheets
from models.loyalty import AuditLog
from models.member import Member
from models.member_import import MemberImport
from models.merchant import Merchant
from tests.conftest import SECRET
from tests.support.factories import make_merchant, staff_headers
from tests.test_member_import import FILE, HEADER, XLSX_ROWS, xlsx
from webhooks import forms
from webhooks.appkeys import EFFECTS

BAD_ROWS = HEADER + "R1,13800000001,,,,,,,\nR2,12345,,,,,,,\nR3,13800000003,,,,钻石王者,,,\n"


def upload(content: bytes, filename: str = "会员.csv", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", content, filename=filename, content_type="text/csv")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


async def finished(client: TestClient, job_id: int, headers: dict[str, str]) -> dict[str, Any]:
    """The job once its background task is done. With memory:// Redis the test app runs tasks in-process;
    with a real Redis they are handed to arq workers, so the test runs what is due itself, as one would."""
    for _ in range(200):
        await client.app[EFFECTS].run_due(datetime.now(UTC))
        response = await client.get(f"/api/admin/members/imports/{job_id}", headers=headers)
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        if body["status"] == "done":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"import {job_id} did not finish: {body}")


async def test_admin_uploads_a_file_and_follows_the_job_to_its_report(client: TestClient) -> None:
    shop = await make_merchant()
    admin = await staff_headers(client, shop, "admin")
    response = await client.post(
        "/api/admin/members/import", data=upload(BAD_ROWS.encode("gb18030")), headers=admin
    )
    assert response.status == 202, await response.text()
    started = await response.json()
    assert (started["filename"], started["encoding"], started["total_rows"], started["dry_run"]) == (
        "会员.csv",
        "gb18030",
        3,
        False,
    )
    job = await finished(client, started["id"], admin)
    assert (job["created"], job["updated"], job["unchanged"], job["rejected"], job["processed_rows"]) == (
        1,
        0,
        0,
        2,
        3,
    )
    assert job["rejections"] == [
        {"row": 3, "field": "phone", "reason": "手机号格式不正确，请输入 11 位中国大陆手机号"},
        {
            "row": 4,
            "field": "tier",
            "reason": "未知的会员等级「钻石王者」（可用：diamond、gold、normal、silver）",
        },
    ]
    report = await client.get(job["report_url"], headers=admin)
    assert report.status == 200 and report.content_type == "text/csv"
    raw = await report.read()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert list(csv.reader(io.StringIO(raw.decode("utf-8-sig")))) == [
        ["行号", "会员号", "手机号", "结果", "字段", "原因", "说明"],
        ["3", "R2", "", "拒绝", "手机号", "手机号格式不正确，请输入 11 位中国大陆手机号", ""],
        [
            "4",
            "R3",
            "138****0003",
            "拒绝",
            "等级",
            "未知的会员等级「钻石王者」（可用：diamond、gold、normal、silver）",
            "",
        ],
    ]
    actions = await AuditLog.filter(merchant_id=shop.id, action__startswith="members.import").values_list(
        "action", "actor"
    )
    assert sorted(actions) == [("members.import", "staff:1"), ("members.import.finished", "staff:1")]


async def test_a_dry_run_upload_reports_every_row_and_changes_nothing(client: TestClient) -> None:
    shop = await make_merchant()
    admin = await staff_headers(client, shop, "admin")
    response = await client.post(
        "/api/admin/members/import", data=upload(FILE.encode(), dry_run="true"), headers=admin
    )
    job = await finished(client, (await response.json())["id"], admin)
    assert (job["dry_run"], job["created"]) == (True, 3)
    assert await Member.filter(merchant_id=shop.id).count() == 0
    report = (await (await client.get(job["report_url"], headers=admin)).read()).decode("utf-8-sig")
    assert [line[:4] for line in csv.reader(io.StringIO(report))][1:] == [
        ["2", "VIP001", "138****8000", "新建"],
        ["3", "VIP002", "139****9000", "新建"],
        ["4", "", "137****7000", "新建"],
    ]


async def test_refusals_name_the_field_and_change_nothing(client: TestClient, monkeypatch: Any) -> None:
    shop = await make_merchant()
    admin = await staff_headers(client, shop, "admin")
    cashier = await staff_headers(client, shop, "cashier")
    url = "/api/admin/members/import"
    forbidden = await client.post(url, data=upload(FILE.encode()), headers=cashier)
    assert forbidden.status == 403
    cases = [
        (
            upload(b"\xd0\xcf\x11\xe0old excel"),
            "不支持旧版 .xls 文件，请在 Excel 中另存为 .xlsx 或 CSV 后再上传",
        ),
        (upload("姓名,积分\n张三,10\n".encode()), "文件缺少「手机号」或「会员号」列（表头须在第一行）"),
        (upload(HEADER.encode()), "文件只有表头，没有会员数据"),
        (upload(b"PK\x03\x04 not really a zip"), "无法读取该 XLSX 文件，请确认文件未损坏"),
    ]
    for form, message in cases:
        response = await client.post(url, data=form, headers=admin)
        assert response.status == 400, await response.text()
        assert (await response.json())["error"] == {
            "code": "validation_error",
            "message": message,
            "field": "file",
        }
    as_json = await client.post(url, json={"file": "x"}, headers=admin)
    assert as_json.status == 400 and (await as_json.json())["error"]["field"] == "file"
    missing = await client.post(url, data=upload(FILE.encode(), dry_run="maybe"), headers=admin)
    assert (await missing.json())["error"]["field"] == "dry_run"
    monkeypatch.setattr(sheets, "MAX_UNPACKED_BYTES", 1000)
    bomb = await client.post(url, data=upload(xlsx(XLSX_ROWS), "members.xlsx"), headers=admin)
    assert (await bomb.json())["error"] == {
        "code": "validation_error",
        "message": "XLSX 文件解压后过大，请拆分后导入，或用命令行导入",
        "field": "file",
    }
    monkeypatch.setattr(forms, "MAX_UPLOAD_BYTES", 100)
    too_big = await client.post(url, data=upload(FILE.encode()), headers=admin)
    assert too_big.status == 413 and (await too_big.json())["error"]["field"] == "file"
    assert await MemberImport.all().count() == 0 and await Member.all().count() == 0


async def test_another_merchants_import_is_not_found(client: TestClient) -> None:
    shop, other = await make_merchant(), await make_merchant("other")
    admin = await staff_headers(client, shop, "admin")
    theirs = await staff_headers(client, other, "admin", username="their-admin")
    response = await client.post("/api/admin/members/import", data=upload(FILE.encode()), headers=theirs)
    job_id = (await response.json())["id"]
    await finished(client, job_id, theirs)
    for path in (f"/api/admin/members/imports/{job_id}", f"/api/admin/members/imports/{job_id}/report"):
        response = await client.get(path, headers=admin)
        assert response.status == 404 and (await response.json())["error"]["field"] == "id"


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


async def test_cli_imports_a_file_and_writes_the_report(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    shop: Merchant = await make_merchant()
    path = tmp_path / "members.csv"
    path.write_bytes(BAD_ROWS.encode("utf-8-sig"))
    report = tmp_path / "report.csv"
    code, out, _ = await memberbot(
        settings,
        "members",
        "import",
        "--merchant",
        shop.slug,
        str(path),
        "--dry-run",
        "--report",
        str(report),
    )
    assert code == 0 and "1 created, 0 updated, 0 unchanged, 2 rejected" in out
    assert len(report.read_text(encoding="utf-8-sig").splitlines()) == 4
    assert await Member.all().count() == 0
    code, out, _ = await memberbot(settings, "members", "import", "--merchant", shop.slug, str(path))
    assert code == 0 and "import 2 rows: 1 created" in out
    assert await Member.filter(merchant_id=shop.id, external_id="R1").count() == 1
    assert (await MemberImport.get(id=2)).actor == "cli"
    code, _, err = await memberbot(
        settings, "members", "import", "--merchant", shop.slug, str(tmp_path / "none.csv")
    )
    assert code == 1 and "none.csv" in err


async def test_an_imported_members_opening_balances_show_in_their_ledgers(client: TestClient) -> None:
    shop = await make_merchant()
    admin = await staff_headers(client, shop, "admin")
    response = await client.post("/api/admin/members/import", data=upload(FILE.encode()), headers=admin)
    await finished(client, (await response.json())["id"], admin)
    zhang = await Member.get(merchant_id=shop.id, external_id="VIP001")
    wallet = await client.get(f"/api/admin/members/{zhang.code}/wallet", headers=admin)
    assert wallet.status == 200, await wallet.text()
    body = await wallet.json()
    assert [(t["kind"], t["kind_label"], t["principal_delta"]) for t in body["transactions"]] == [
        ("opening", "期初储值", 12_850)
    ]
