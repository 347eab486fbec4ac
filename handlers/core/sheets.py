"""Reading an uploaded CSV or XLSX file into a header and numbered rows, for the back office's imports.

CSV may be UTF-8 (with or without a BOM, as Excel saves it) or GB18030/GBK (what Excel on a Chinese
Windows saves as "CSV"). XLSX is read from its first worksheet with openpyxl in read-only mode, cached
values rather than formulas, through defusedxml (no entity expansion); a file that unpacks to more than
`MAX_UNPACKED_BYTES` is refused before parsing. Row numbers are the ones a spreadsheet shows (the header
is row 1); blank rows are skipped. CPU-bound: call `read_sheet` through `asyncio.to_thread`.
"""

from __future__ import annotations

import csv
import io
import warnings
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Literal

import openpyxl

from handlers.core.errors import ValidationError

Format = Literal["csv", "xlsx"]
Cell = str | int | float | bool | None
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
FIELD = "file"


@dataclass(frozen=True, slots=True)
class Sheet:
    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[Cell, ...]], ...]  # (row number as the spreadsheet shows it, cells)


def read_sheet(data: bytes, fmt: Format, *, max_rows: int) -> Sheet:
    """The file's header (stripped) and non-blank rows; a 400 naming `file` when it cannot be read,
    has no header, or holds more than `max_rows` data rows."""
    rows = _csv_rows(data) if fmt == "csv" else _xlsx_rows(data)
    header: tuple[str, ...] | None = None
    body: list[tuple[int, tuple[Cell, ...]]] = []
    for number, cells in rows:
        if all(_blank(cell) for cell in cells):
            continue
        if header is None:
            header = _header(cells)
            continue
        if len(body) == max_rows:
            raise ValidationError(f"file 最多 {max_rows} 行数据，请分批导入", field=FIELD)
        body.append((number, cells))
    if header is None:
        raise ValidationError("file 是空的：第一行须为列名", field=FIELD)
    return Sheet(header, tuple(body))


def _blank(cell: Cell) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _header(cells: tuple[Cell, ...]) -> tuple[str, ...]:
    names = ["" if cell is None else str(cell).strip() for cell in cells]
    while names and not names[-1]:
        names.pop()
    return tuple(names)


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValidationError("file 须为 UTF-8 或 GBK 编码的 CSV 文件", field=FIELD)


def _csv_rows(data: bytes) -> list[tuple[int, tuple[Cell, ...]]]:
    if data.startswith(b"PK\x03\x04"):
        raise ValidationError("file 是 xlsx 文件，请将 format 设为 xlsx", field=FIELD)
    text = _decode(data)
    if "\x00" in text:
        raise ValidationError("file 不是文本格式的 CSV 文件（是否应选择 xlsx？）", field=FIELD)
    try:
        return [
            (number, tuple(cell.strip() for cell in record))
            for number, record in enumerate(csv.reader(io.StringIO(text, newline="")), start=1)
        ]
    except csv.Error as exc:
        raise ValidationError("file 不是有效的 CSV 文件", field=FIELD) from exc


def _xlsx_rows(data: bytes) -> list[tuple[int, tuple[Cell, ...]]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise ValidationError("file 不是有效的 xlsx 文件", field=FIELD) from exc
    if unpacked > MAX_UNPACKED_BYTES:
        raise ValidationError("file 解压后过大，请拆分后导入", field=FIELD)
    try:
        with warnings.catch_warnings():  # openpyxl warns about styles and extensions it does not read
            warnings.simplefilter("ignore")
            book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
            try:
                sheet = book.worksheets[0]
                return [
                    (number, tuple(_cell(value) for value in values))
                    for number, values in enumerate(sheet.iter_rows(values_only=True), start=1)
                ]
            finally:
                book.close()
    except Exception as exc:  # whatever a damaged or hostile workbook makes openpyxl raise
        raise ValidationError("file 不是有效的 xlsx 文件，或无法读取", field=FIELD) from exc


def _cell(value: object) -> Cell:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)
