"""Import the product catalogue from a CSV or XLSX file: idempotent per SKU, with a dry run.

Columns (a header row; English or Chinese names, any order; other columns are ignored and listed in the
report): `sku`/商品编码 and `name`/名称 are required, and the price as `price`/售价 in yuan or `price_fen`
in fen; optional are `category`/品类, the cost as `cost`/成本 (yuan) or `cost_fen`, and `active`/状态
(是/否, 上架/下架, true/false, 1/0). An absent column keeps what an existing product has; an empty cell
means the default (no category, cost unknown, active).

Every row is checked first. If any row breaks a rule, the report lists each problem (row number as the
spreadsheet shows it, field, Chinese reason) and NOTHING is written (`applied` false): fix the file and
import it again. Otherwise one transaction creates the products whose SKU is new and updates those whose
values differ, and leaves the rest untouched — importing the same file again changes nothing. A dry run
reports exactly that plan and writes nothing. An import that changed something is audit-logged with the
file's SHA-256 and its counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tortoise.transactions import in_transaction

from handlers.core import audit_log, queries
from handlers.core.errors import ValidationError
from handlers.core.sheets import Cell, Format, Sheet, read_sheet
from handlers.products.catalogue import MAX_CATEGORY, MAX_NAME, MAX_PRICE_FEN, ProductInput, sku_problem
from models.product import Product

MAX_ROWS = 20_000
MAX_PROBLEMS = 1_000  # the report lists at most this many; `rejected_rows` counts them all
FIELDS = ("name", "price_fen", "category", "cost_fen", "active")  # what a row may set besides its SKU
ALIASES: dict[str, tuple[str, str]] = {  # normalised header → (field, unit)
    **{name: ("sku", "") for name in ("sku", "商品编码", "编码", "货号", "条码")},
    **{name: ("name", "") for name in ("name", "名称", "商品名称", "品名")},
    **{name: ("category", "") for name in ("category", "品类", "分类", "类别")},
    **{name: ("price_fen", "yuan") for name in ("price", "售价", "价格", "单价")},
    "price_fen": ("price_fen", "fen"),
    **{name: ("cost_fen", "yuan") for name in ("cost", "成本", "成本价", "进价")},
    "cost_fen": ("cost_fen", "fen"),
    **{name: ("active", "") for name in ("active", "状态", "上架")},
}
REQUIRED = {
    "sku": "sku（商品编码）",
    "name": "name（名称）",
    "price_fen": "price（售价，元）或 price_fen（分）",
}
TRUE = {"1", "true", "yes", "y", "是", "上架", "启用", "在售"}
FALSE = {"0", "false", "no", "n", "否", "下架", "停用", "停售"}
YUAN = re.compile(r"^\d{1,9}(\.\d{1,2})?$")


@dataclass(frozen=True, slots=True)
class Problem:
    row: int
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    dry_run: bool
    applied: bool
    rows: int
    created: int
    updated: int
    unchanged: int
    rejected_rows: int
    problems: tuple[Problem, ...]
    ignored_columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Column:
    index: int
    header: str
    field: str
    unit: str


@dataclass(frozen=True, slots=True)
class _Row:
    number: int
    sku: str
    values: Mapping[str, Any]  # only the fields whose column the file has


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def import_products(
    merchant_id: int, data: bytes, fmt: Format, *, dry_run: bool, actor: str, now: datetime
) -> ImportReport:
    sheet = await asyncio.to_thread(read_sheet, data, fmt, max_rows=MAX_ROWS)
    columns, ignored = _columns(sheet.header)
    rows, problems = _parse(sheet, columns)
    skus = [row.sku for row in rows]
    if dry_run or problems:
        created, updated, unchanged = _plan(rows, await _existing(merchant_id, skus, lock=False))
        return _report(dry_run, False, sheet, (created, updated, unchanged), problems, ignored)
    async with in_transaction():
        created, updated, unchanged = _plan(rows, await _existing(merchant_id, skus, lock=True))
        if created or updated:
            await _upsert(merchant_id, [*created, *updated], now)
            await audit_log.record(
                merchant_id,
                actor,
                "product.import",
                "products",
                format=fmt,
                sha256=hashlib.sha256(data).hexdigest(),
                rows=len(rows),
                created=len(created),
                updated=len(updated),
                unchanged=unchanged,
            )
    return _report(dry_run, True, sheet, (created, updated, unchanged), problems, ignored)


def _report(
    dry_run: bool,
    applied: bool,
    sheet: Sheet,
    plan: tuple[list[tuple[str, ProductInput]], list[tuple[str, ProductInput]], int],
    problems: list[Problem],
    ignored: list[str],
) -> ImportReport:
    created, updated, unchanged = plan
    return ImportReport(
        dry_run=dry_run,
        applied=applied,
        rows=len(sheet.rows),
        created=len(created),
        updated=len(updated),
        unchanged=unchanged,
        rejected_rows=len({p.row for p in problems}),
        problems=tuple(problems[:MAX_PROBLEMS]),
        ignored_columns=tuple(ignored),
    )


def _normalise(header: str) -> str:
    return re.sub(r"\s+|[（(](元|分)[)）]$", "", header.strip().lower())


def _columns(header: Sequence[str]) -> tuple[dict[str, _Column], list[str]]:
    """The file's columns by field, and the headers that name no field. A field named twice, or a
    required one missing, is a 400 naming `file`."""
    found: dict[str, _Column] = {}
    ignored: list[str] = []
    for index, name in enumerate(header):
        target = ALIASES.get(_normalise(name))
        if target is None:
            if name:
                ignored.append(name)
            continue
        field, unit = target
        if field in found:
            raise ValidationError(f"file 第 1 行：列「{name}」与「{found[field].header}」重复", field="file")
        found[field] = _Column(index, name, field, unit)
    missing = [label for field, label in REQUIRED.items() if field not in found]
    if missing:
        raise ValidationError(f"file 第 1 行缺少必填列：{'、'.join(missing)}", field="file")
    return found, ignored


def _parse(sheet: Sheet, columns: Mapping[str, _Column]) -> tuple[list[_Row], list[Problem]]:
    rows: list[_Row] = []
    problems: list[Problem] = []
    first_row: dict[str, int] = {}
    for number, cells in sheet.rows:
        found: list[Problem] = []
        values: dict[str, Any] = {}
        for field, column in columns.items():
            cell = cells[column.index] if column.index < len(cells) else None
            try:
                values[field] = PARSERS[(field, column.unit)](cell)
            except _Bad as bad:
                found.append(Problem(number, field, f"第 {number} 行「{column.header}」：{bad.reason}"))
        sku = values.pop("sku", None)
        if isinstance(sku, str) and sku in first_row:
            header = columns["sku"].header
            reason = f"SKU {sku} 与第 {first_row[sku]} 行重复"
            found.insert(0, Problem(number, "sku", f"第 {number} 行「{header}」：{reason}"))
        if found or not isinstance(sku, str):
            problems.extend(found)
            continue
        first_row[sku] = number
        rows.append(_Row(number, sku, values))
    return rows, problems


def _text(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell).strip()


def _sku(cell: Cell) -> str:
    value = _text(cell)
    if not value:
        raise _Bad("SKU 不能为空")
    if (problem := sku_problem(value)) is not None:
        raise _Bad(problem)
    return value


def _name(cell: Cell) -> str:
    value = _text(cell)
    if not value or len(value) > MAX_NAME:
        raise _Bad(f"名称须为 1–{MAX_NAME} 个字符")
    return value


def _category(cell: Cell) -> str:
    value = _text(cell)
    if len(value) > MAX_CATEGORY:
        raise _Bad(f"品类最多 {MAX_CATEGORY} 个字符")
    return value


def _fen(cell: Cell, unit: str) -> int:
    """Money in fen from a yuan or fen cell; a 0 … MAX_PRICE_FEN integer."""
    if isinstance(cell, bool):
        raise _Bad("须为金额")
    if unit == "yuan":
        if isinstance(cell, int | float):
            fen = round(cell * 100)
            if cell < 0 or abs(cell * 100 - fen) > 1e-6:
                raise _Bad("须为不小于 0 的金额（元，最多两位小数），如 12.50")
        else:
            text = _text(cell).lstrip("¥￥").replace(",", "")
            if not YUAN.match(text):
                raise _Bad("须为不小于 0 的金额（元，最多两位小数），如 12.50")
            fen = int(Decimal(text) * 100)
    elif isinstance(cell, int) or (isinstance(cell, float) and cell.is_integer()):
        fen = int(cell)
    elif isinstance(cell, str) and cell.strip().isdigit():
        fen = int(cell.strip())
    else:
        raise _Bad("须为不小于 0 的整数（分）")
    if not 0 <= fen <= MAX_PRICE_FEN:
        raise _Bad(f"须在 0 到 {MAX_PRICE_FEN // 100} 元之间")
    return fen


def _price(unit: str) -> Callable[[Cell], int]:
    def parse(cell: Cell) -> int:
        if not _text(cell):
            raise _Bad("售价不能为空")
        return _fen(cell, unit)

    return parse


def _cost(unit: str) -> Callable[[Cell], int | None]:
    def parse(cell: Cell) -> int | None:
        return _fen(cell, unit) if _text(cell) else None

    return parse


def _active(cell: Cell) -> bool:
    if isinstance(cell, bool):
        return cell
    value = _text(cell).lower()
    if not value or value in TRUE:
        return True
    if value in FALSE:
        return False
    raise _Bad("须为 是/否、上架/下架、true/false 或 1/0")


PARSERS: dict[tuple[str, str], Callable[[Cell], Any]] = {
    ("sku", ""): _sku,
    ("name", ""): _name,
    ("category", ""): _category,
    ("price_fen", "yuan"): _price("yuan"),
    ("price_fen", "fen"): _price("fen"),
    ("cost_fen", "yuan"): _cost("yuan"),
    ("cost_fen", "fen"): _cost("fen"),
    ("active", ""): _active,
}
NEW = ProductInput(name="", price_fen=0)  # what an absent column means for a new product

_EXISTING_SQL = "SELECT * FROM product WHERE merchant_id = :merchant AND sku = ANY(:skus::text[])"


async def _existing(merchant_id: int, skus: list[str], *, lock: bool) -> dict[str, Product]:
    sql = _EXISTING_SQL + (" ORDER BY id FOR UPDATE" if lock else "")
    rows = await queries.fetch_rows(sql, merchant=merchant_id, skus=skus)
    return {row["sku"]: queries.as_model(Product, row) for row in rows}


def _plan(
    rows: Sequence[_Row], existing: Mapping[str, Product]
) -> tuple[list[tuple[str, ProductInput]], list[tuple[str, ProductInput]], int]:
    """(created, updated, unchanged count): each row's final values, merged over what it keeps."""
    created: list[tuple[str, ProductInput]] = []
    updated: list[tuple[str, ProductInput]] = []
    unchanged = 0
    for row in rows:
        current = existing.get(row.sku)
        base = {name: getattr(current if current is not None else NEW, name) for name in FIELDS}
        merged = ProductInput(**{**base, **row.values})
        if current is None:
            created.append((row.sku, merged))
        elif {name: getattr(merged, name) for name in FIELDS} != base:
            updated.append((row.sku, merged))
        else:
            unchanged += 1
    return created, updated, unchanged


_UPSERT_SQL = """
INSERT INTO product (merchant_id, sku, name, category, price_fen, cost_fen, active, created_at, updated_at)
SELECT :merchant::int, t.sku, t.name, t.category, t.price_fen, t.cost_fen, t.active,
       :now::timestamptz, :now::timestamptz
  FROM unnest(:skus::text[], :names::text[], :categories::text[], :prices::bigint[], :costs::bigint[],
              :actives::boolean[]) AS t(sku, name, category, price_fen, cost_fen, active)
ON CONFLICT (merchant_id, sku) DO UPDATE
   SET name = EXCLUDED.name, category = EXCLUDED.category, price_fen = EXCLUDED.price_fen,
       cost_fen = EXCLUDED.cost_fen, active = EXCLUDED.active, updated_at = EXCLUDED.updated_at
"""


async def _upsert(merchant_id: int, writes: Sequence[tuple[str, ProductInput]], now: datetime) -> None:
    """One statement for every created and updated row (a product another request created meanwhile
    is updated to the file's values)."""
    await queries.fetch_rows(
        _UPSERT_SQL,
        merchant=merchant_id,
        now=now,
        skus=[sku for sku, _ in writes],
        names=[data.name for _, data in writes],
        categories=[data.category for _, data in writes],
        prices=[data.price_fen for _, data in writes],
        costs=[data.cost_fen for _, data in writes],
        actives=[data.active for _, data in writes],
    )
