"""The product catalogue: CRUD over the admin API with roles and an audit trail, CSV/XLSX import
(idempotent per SKU, dry run, rejected rows with their reasons, nothing half-applied), and till
purchases that name catalogue SKUs."""

from __future__ import annotations

import base64
import io
import zipfile
from typing import Any

import openpyxl
import pytest
from aiohttp.test_utils import TestClient

from handlers.loyalty import config as loyalty_config
from handlers.loyalty.ledger_audit import audit_points
from handlers.products import catalogue
from models.loyalty import AuditLog
from models.merchant import Merchant
from models.points import PointsAccount
from models.product import Product
from models.purchase import Purchase
from tests.support.factories import make_member, make_merchant, staff_headers

IMPORT = "/api/admin/products/import"


@pytest.fixture
async def shop(client: TestClient) -> Merchant:
    return await make_merchant()


def public(product: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in product.items() if k not in ("id", "created_at", "updated_at")}


async def catalogue_rows() -> list[tuple[str, str, str, int, int | None, bool]]:
    return [
        (p.sku, p.name, p.category, p.price_fen, p.cost_fen, p.active)
        for p in await Product.all().order_by("sku")
    ]


def upload(content: bytes, fmt: str = "csv", *, dry_run: bool = False) -> dict[str, Any]:
    return {"format": fmt, "file": base64.b64encode(content).decode(), "dry_run": dry_run}


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


async def run_import(client: TestClient, admin: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(IMPORT, json=body, headers=admin)
    assert response.status == 200, await response.text()
    return dict(await response.json())


def counts(report: dict[str, Any]) -> tuple[Any, ...]:
    keys = ("dry_run", "applied", "rows", "created", "updated", "unchanged", "rejected_rows")
    return tuple(report[k] for k in keys)


async def test_admins_edit_the_catalogue_and_managers_read_it(client: TestClient, shop: Merchant) -> None:
    admin = await staff_headers(client, shop, "admin")
    manager = await staff_headers(client, shop, "manager")
    latte = {"sku": "LT-001", "name": "拿铁", "category": "coffee", "price_fen": 2800, "cost_fen": 900}
    created = await client.post("/api/admin/products", json=latte, headers=admin)
    assert created.status == 201, await created.text()
    product = await created.json()
    assert public(product) == {**latte, "active": True}
    twice = await client.post("/api/admin/products", json={**latte, "name": "又一个"}, headers=admin)
    assert twice.status == 409 and (await twice.json())["error"]["field"] == "sku"
    bad = await client.post("/api/admin/products", json={**latte, "sku": "拿铁 1"}, headers=admin)
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "sku"
    negative = await client.post(
        "/api/admin/products", json={**latte, "sku": "X", "price_fen": -1}, headers=admin
    )
    assert negative.status == 400 and (await negative.json())["error"]["field"] == "price_fen"
    tea = {"sku": "TEA-9", "name": "乌龙茶", "price_fen": 1500}
    assert (await client.post("/api/admin/products", json=tea, headers=manager)).status == 403
    assert (await client.post("/api/admin/products", json=tea, headers=admin)).status == 201
    path = f"/api/admin/products/{product['id']}"
    replaced = await client.put(
        path, json={"name": "冰拿铁", "category": "coffee", "price_fen": 3000, "active": False}, headers=admin
    )
    assert public(await replaced.json()) == {
        "sku": "LT-001",
        "name": "冰拿铁",
        "category": "coffee",
        "price_fen": 3000,
        "cost_fen": None,
        "active": False,
    }
    listed = await (await client.get("/api/admin/products?active=false", headers=manager)).json()
    assert [p["sku"] for p in listed["items"]] == ["LT-001"]
    by_name = await (await client.get("/api/admin/products?q=乌龙", headers=manager)).json()
    by_sku = await (await client.get("/api/admin/products?q=LT-", headers=manager)).json()
    assert ([p["sku"] for p in by_name["items"]], [p["sku"] for p in by_sku["items"]]) == (
        ["TEA-9"],
        ["LT-001"],
    )
    page = await (await client.get("/api/admin/products?limit=1", headers=manager)).json()
    rest = await (
        await client.get(f"/api/admin/products?cursor={page['next_cursor']}", headers=manager)
    ).json()
    assert [p["sku"] for p in page["items"] + rest["items"]] == ["LT-001", "TEA-9"]
    assert rest["next_cursor"] is None
    assert (await client.delete(path, headers=manager)).status == 403
    assert (await client.delete(path, headers=admin)).status == 204
    assert (await client.get(path, headers=manager)).status == 404
    actions = [
        (r.action, r.subject) for r in await AuditLog.filter(action__startswith="product.").order_by("id")
    ]
    tea_id = (await Product.get(sku="TEA-9")).id
    assert actions == [
        ("product.create", f"product:{product['id']}"),
        ("product.create", f"product:{tea_id}"),
        ("product.update", f"product:{product['id']}"),
        ("product.delete", f"product:{product['id']}"),
    ]


async def test_a_csv_import_is_idempotent_per_sku_with_a_dry_run_first(
    client: TestClient, shop: Merchant
) -> None:
    admin = await staff_headers(client, shop, "admin")
    first = csv_bytes(
        "sku,name,category,price,cost,active,库存",
        "LT-001,拿铁,coffee,28.00,9.5,上架,100",
        "AM-002,美式,coffee,22,,是,50",
        "",
        "MUG-1,马克杯,merch,¥59.90,20,下架,3",
    )
    dry = await run_import(client, admin, upload(first, dry_run=True))
    assert counts(dry) == (True, False, 3, 3, 0, 0, 0)
    assert dry["ignored_columns"] == ["库存"] and dry["problems"] == []
    assert await Product.all().count() == 0
    applied = await run_import(client, admin, upload(first))
    assert counts(applied) == (False, True, 3, 3, 0, 0, 0)
    expected = [
        ("AM-002", "美式", "coffee", 2200, None, True),
        ("LT-001", "拿铁", "coffee", 2800, 950, True),
        ("MUG-1", "马克杯", "merch", 5990, 2000, False),
    ]
    assert await catalogue_rows() == expected
    stamps = {p.sku: p.updated_at for p in await Product.all()}
    again = await run_import(client, admin, upload(first))
    assert counts(again) == (False, True, 3, 0, 0, 3, 0)
    assert {p.sku: p.updated_at for p in await Product.all()} == stamps
    assert await catalogue_rows() == expected
    # A later file without cost or active columns keeps them; a changed price updates, a new SKU is added.
    changed = csv_bytes(
        "商品编码,名称,品类,售价（元）",
        "LT-001,拿铁,coffee,30",
        "AM-002,美式,coffee,22",
        "CK-7,曲奇,food,8.8",
    )
    preview = await run_import(client, admin, upload(changed, dry_run=True))
    assert counts(preview) == (True, False, 3, 1, 1, 1, 0)
    assert await catalogue_rows() == expected
    done = await run_import(client, admin, upload(changed))
    assert counts(done) == (False, True, 3, 1, 1, 1, 0)
    assert await catalogue_rows() == [
        ("AM-002", "美式", "coffee", 2200, None, True),
        ("CK-7", "曲奇", "food", 880, None, True),
        ("LT-001", "拿铁", "coffee", 3000, 950, True),
        ("MUG-1", "马克杯", "merch", 5990, 2000, False),
    ]
    imports = await AuditLog.filter(action="product.import").order_by("id")
    assert [(r.detail["created"], r.detail["updated"], r.detail["unchanged"]) for r in imports] == [
        (3, 0, 0),
        (1, 1, 1),
    ]


async def test_rejected_rows_are_reported_and_nothing_is_written(client: TestClient, shop: Merchant) -> None:
    admin = await staff_headers(client, shop, "admin")
    await catalogue.create_product(shop.id, "LT-001", catalogue.ProductInput("拿铁", 2800), actor="test")
    content = csv_bytes(
        "sku,name,price_fen,cost,active",
        "LT-001,新拿铁,3000,,",
        "AM-002,,2200,,",
        "MUG 1,马克杯,abc,,",
        "LT-001,重复,100,,",
        "CK-7,曲奇,880,-1,可能",
        "TEA-1,乌龙,1500,5.555,",
    )
    for dry_run in (True, False):
        report = await run_import(client, admin, upload(content, dry_run=dry_run))
        assert counts(report) == (dry_run, False, 6, 0, 1, 0, 5)
        assert report["problems"] == [
            {"row": 3, "field": "name", "message": "第 3 行「name」：名称须为 1–128 个字符"},
            {
                "row": 4,
                "field": "sku",
                "message": "第 4 行「sku」：SKU 须为 1–64 个字母、数字或 _ . : / + # -",
            },
            {"row": 4, "field": "price_fen", "message": "第 4 行「price_fen」：须为不小于 0 的整数（分）"},
            {"row": 5, "field": "sku", "message": "第 5 行「sku」：SKU LT-001 与第 2 行重复"},
            {
                "row": 6,
                "field": "cost_fen",
                "message": "第 6 行「cost」：须为不小于 0 的金额（元，最多两位小数），如 12.50",
            },
            {
                "row": 6,
                "field": "active",
                "message": "第 6 行「active」：须为 是/否、上架/下架、true/false 或 1/0",
            },
            {
                "row": 7,
                "field": "cost_fen",
                "message": "第 7 行「cost」：须为不小于 0 的金额（元，最多两位小数），如 12.50",
            },
        ]
    assert await catalogue_rows() == [("LT-001", "拿铁", "", 2800, None, True)]  # not even the valid row
    assert await AuditLog.filter(action="product.import").count() == 0


def xlsx_bytes(rows: list[list[Any]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def test_an_xlsx_and_a_gbk_csv_import_the_same_catalogue(client: TestClient, shop: Merchant) -> None:
    admin = await staff_headers(client, shop, "admin")
    workbook = xlsx_bytes(
        [
            ["条码", "商品名称", "分类", "售价", "成本价", "状态", "备注"],
            [6901234567892, "矿泉水", "drinks", 2.5, 1, "上架", "整箱"],
            ["LT-001", "拿铁", "coffee", 28, None, True, None],
            [None, None, None, None, None, None, None],
        ]
    )
    report = await run_import(client, admin, upload(workbook, "xlsx"))
    assert counts(report) == (False, True, 2, 2, 0, 0, 0) and report["ignored_columns"] == ["备注"]
    expected = [
        ("6901234567892", "矿泉水", "drinks", 250, 100, True),
        ("LT-001", "拿铁", "coffee", 2800, None, True),
    ]
    assert await catalogue_rows() == expected
    gbk = csv_bytes("条码,商品名称,分类,售价,成本价", "6901234567892,矿泉水,drinks,2.50,1", encoding="gbk")
    again = await run_import(client, admin, upload(gbk))
    assert counts(again) == (False, True, 1, 0, 0, 1, 0)
    assert await catalogue_rows() == expected


async def test_a_file_that_cannot_be_read_is_a_400_naming_it(client: TestClient, shop: Merchant) -> None:
    admin = await staff_headers(client, shop, "admin")
    cases = [
        ({"format": "csv", "file": "@@not base64@@"}, "file 须为 base64 编码的文件内容"),
        (upload(csv_bytes("sku,price", "A,1")), "file 第 1 行缺少必填列：name（名称）"),
        (upload(csv_bytes("sku,name,price,售价", "A,a,1,1")), "file 第 1 行：列「售价」与「price」重复"),
        (upload(b"sku,name,price\r\n", "xlsx"), "file 不是有效的 xlsx 文件"),
        (
            upload(xlsx_bytes([["sku", "name", "price"], ["A", "a", 1]]), "csv"),
            "file 是 xlsx 文件，请将 format 设为 xlsx",
        ),
        (upload(b"\r\n,,\r\n"), "file 是空的：第一行须为列名"),
    ]
    for body, message in cases:
        response = await client.post(IMPORT, json=body, headers=admin)
        error = (await response.json())["error"]
        assert (response.status, error["field"], error["message"]) == (400, "file", message), body
    assert await Product.all().count() == 0


async def test_an_xlsx_with_xml_entities_is_refused(client: TestClient, shop: Merchant) -> None:
    admin = await staff_headers(client, shop, "admin")
    source = zipfile.ZipFile(io.BytesIO(xlsx_bytes([["sku", "name", "price"], ["A", "a", 1]])))
    hostile = io.BytesIO()
    with zipfile.ZipFile(hostile, "w") as archive:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                declaration, _, rest = data.rpartition(b"?>")
                bomb = b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
                data = declaration + (b"?>" if declaration else b"") + bomb + rest
            archive.writestr(info, data)
    response = await client.post(IMPORT, json=upload(hostile.getvalue(), "xlsx"), headers=admin)
    error = (await response.json())["error"]
    assert (response.status, error["field"], error["message"]) == (
        400,
        "file",
        "file 不是有效的 xlsx 文件，或无法读取",
    )
    assert await Product.all().count() == 0


async def test_a_purchase_by_sku_earns_the_category_multiplier_and_keeps_the_cost(
    client: TestClient, shop: Merchant
) -> None:
    await loyalty_config.save_rules(
        shop.id, {"points_per_yuan": 1, "category_multipliers": {"coffee": 2}}, actor="test"
    )
    latte = catalogue.ProductInput("拿铁", 2500, category="coffee", cost_fen=900)
    await catalogue.create_product(shop.id, "LT-001", latte, actor="test")
    await catalogue.create_product(
        shop.id, "MUG-1", catalogue.ProductInput("马克杯", 5000, "merch"), actor="test"
    )
    member = await make_member(shop)
    cashier = await staff_headers(client, shop)
    body = {
        "idempotency_key": "sku-1",
        "member_id": member.id,
        "amount_fen": 9000,
        "items": [{"sku": "LT-001", "qty": 2}, {"sku": "MUG-1", "qty": 1, "unit_price_fen": 4000}],
    }
    response = await client.post("/api/staff/purchases", json=body, headers=cashier)
    assert response.status == 200, await response.text()
    result = await response.json()
    # base 90; the latte is 5000 of the 9000 fen of items: 50 base points, doubled (+50).
    assert (result["points_earned"], [(b["code"], b["points"]) for b in result["breakdown"]]) == (
        140,
        [("base", 90), ("category:coffee", 50)],
    )
    stored = await Purchase.get(idempotency_key="sku-1")
    assert stored.items == [
        {"sku": "LT-001", "category": "coffee", "qty": 2, "unit_price_fen": 2500, "unit_cost_fen": 900},
        {"sku": "MUG-1", "category": "merch", "qty": 1, "unit_price_fen": 4000, "unit_cost_fen": None},
    ]
    await catalogue.update_product(shop.id, (await Product.get(sku="LT-001")).id, latte, actor="test")
    plain = {"idempotency_key": "plain-1", "member_id": member.id, "amount_fen": 9000}
    without = await client.post("/api/staff/purchases", json=plain, headers=cashier)
    assert (await without.json())["points_earned"] == 90
    assert (await Purchase.get(idempotency_key="plain-1")).items == []
    assert await audit_points() == []


async def test_an_unknown_or_inactive_sku_is_a_400_naming_the_item_and_writes_nothing(
    client: TestClient, shop: Merchant
) -> None:
    await catalogue.create_product(shop.id, "LT-001", catalogue.ProductInput("拿铁", 2500), actor="test")
    gone = catalogue.ProductInput("旧款杯", 3000, active=False)
    await catalogue.create_product(shop.id, "OLD-1", gone, actor="test")
    other = await make_merchant("other")
    await catalogue.create_product(other.id, "THEIRS", catalogue.ProductInput("别家", 100), actor="test")
    member = await make_member(shop)
    cashier = await staff_headers(client, shop)
    cases = [
        ("NOPE", "items.1.sku", "items.1.sku：商品 NOPE 不在商品目录中"),
        ("THEIRS", "items.1.sku", "items.1.sku：商品 THEIRS 不在商品目录中"),
        ("OLD-1", "items.1.sku", "items.1.sku：商品 OLD-1（旧款杯）已停售"),
    ]
    for sku, field, message in cases:
        body = {
            "idempotency_key": f"k-{sku}",
            "member_id": member.id,
            "amount_fen": 5000,
            "items": [{"sku": "LT-001", "qty": 1}, {"sku": sku, "qty": 1}],
        }
        response = await client.post("/api/staff/purchases", json=body, headers=cashier)
        error = (await response.json())["error"]
        assert (response.status, error["code"], error["field"], error["message"]) == (
            400,
            "validation_error",
            field,
            message,
        )
    old_style = {"sku": "LT-001", "category": "coffee", "qty": 1, "unit_price_fen": 100}
    body = {"idempotency_key": "old", "member_id": member.id, "amount_fen": 100, "items": [old_style]}
    response = await client.post("/api/staff/purchases", json=body, headers=cashier)
    assert response.status == 400 and (await response.json())["error"]["field"] == "items.0.category"
    assert await Purchase.all().count() == 0
    assert await PointsAccount.filter(balance__gt=0).count() == 0
