"""Reading a member import file: CSV (UTF-8 with or without BOM, or GB18030) or XLSX, header row first.

The format is told by the content, not the name: a ZIP archive is XLSX (read with openpyxl in read-only
mode, first worksheet), anything else is CSV. A CSV that is not valid UTF-8 is read as GB18030 (a superset
of GBK and GB2312, what Excel saves on a Chinese Windows). The first non-empty row is the header; each
column is recognised by its Chinese or English name (`COLUMNS`; case, spaces and a unit in brackets such as
「储值本金（元）」 are ignored), other columns are ignored and listed. Rows that are entirely empty are
skipped. A row number is the spreadsheet's: the header is row 1, so a merchant finds the row in Excel.

Cells come out as `str` (stripped), `date` (an Excel date cell) or None (empty). An integral number cell
becomes its digits, so a phone number Excel stored as a number reads back as 13812345678.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import IO, Any

from handlers.core.errors import ValidationError

Cell = str | date | None

# Field → the header names it is recognised by (compared after `_header_key`).
COLUMNS: dict[str, tuple[str, ...]] = {
    "external_id": ("会员号", "会员编号", "会员卡号", "卡号", "external_id", "member_no"),
    "phone": ("手机号", "手机", "手机号码", "phone", "mobile"),
    "name": ("姓名", "name"),
    "birthday": ("生日", "出生日期", "birthday"),
    "gender": ("性别", "gender"),
    "tier": ("等级", "会员等级", "tier"),
    "points": ("积分", "积分余额", "points"),
    "points_expire_on": ("积分到期日", "积分有效期", "points_expire_on"),
    "stored_value": ("储值本金", "储值余额", "stored_value", "stored_value_yuan"),
}
_BY_HEADER = {_name.lower(): _field for _field, _names in COLUMNS.items() for _name in _names}
_UNIT = re.compile(r"[(（][^)）]*[)）]$")
_ZIP = b"PK\x03\x04"
_OLE = b"\xd0\xcf\x11\xe0"  # the binary .xls of Excel 97-2003
MAX_ROWS = 2_000_000
_CHUNK = 1 << 20


@dataclass(slots=True)
class Table:
    """An opened file: its format, the column of each recognised field, and its data rows."""

    file_format: str  # csv | xlsx
    encoding: str  # csv: utf-8, utf-8-sig or gb18030; xlsx: ""
    columns: dict[str, int]
    ignored: list[str]
    rows: Iterator[tuple[int, dict[str, Cell]]] = field(repr=False)


def open_table(file: IO[bytes], *, max_unpacked: int | None = None) -> Table:
    """Open an uploaded file (seekable, binary). Raises ValidationError (field `file`) when it cannot be read
    as a table with a 手机号 or 会员号 column, or (`max_unpacked`) is an XLSX that unpacks to more bytes."""
    file.seek(0)
    magic = file.read(4)
    file.seek(0)
    if magic == _OLE:
        raise ValidationError("不支持旧版 .xls 文件，请在 Excel 中另存为 .xlsx 或 CSV 后再上传", field="file")
    if magic == _ZIP:
        if max_unpacked is not None and _unpacked(file) > max_unpacked:
            raise ValidationError("XLSX 文件解压后过大，请拆分后导入，或用命令行导入", field="file")
        return _xlsx(file)
    return _csv(file)


def _unpacked(file: IO[bytes]) -> int:
    try:
        with zipfile.ZipFile(file) as archive:
            return sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise ValidationError("无法读取该 XLSX 文件，请确认文件未损坏", field="file") from exc
    finally:
        file.seek(0)


def _header_key(raw: object) -> str:
    text = str(raw or "").replace("\ufeff", "").strip()
    return re.sub(r"\s+", "", _UNIT.sub("", text)).lower()


def _columns(header: list[Any]) -> tuple[dict[str, int], list[str]]:
    columns: dict[str, int] = {}
    ignored: list[str] = []
    for index, raw in enumerate(header):
        name = _BY_HEADER.get(_header_key(raw))
        if name is None:
            if _header_key(raw):
                ignored.append(str(raw).strip()[:64])
            continue
        if name in columns:
            raise ValidationError(f"表头中「{str(raw).strip()}」与另一列重复，请只保留一列", field="file")
        columns[name] = index
    if "phone" not in columns and "external_id" not in columns:
        raise ValidationError("文件缺少「手机号」或「会员号」列（表头须在第一行）", field="file")
    return columns, ignored


def _cell(value: Any) -> Cell:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _rows(
    source: Iterator[tuple[int, list[Any]]], columns: dict[str, int]
) -> Iterator[tuple[int, dict[str, Cell]]]:
    count = 0
    for row_no, values in source:
        cells = {
            name: _cell(values[index]) if index < len(values) else None for name, index in columns.items()
        }
        if all(_cell(value) is None for value in values):
            continue
        count += 1
        if count > MAX_ROWS:
            raise ValidationError(f"文件超过 {MAX_ROWS} 行，请拆分后分批导入", field="file")
        yield row_no, cells


def _first_row(source: Iterator[tuple[int, list[Any]]]) -> list[Any]:
    for _, values in source:
        if any(_cell(v) is not None for v in values):
            return values
    raise ValidationError("文件是空的，没有表头", field="file")


def _xlsx(file: IO[bytes]) -> Table:
    from openpyxl import load_workbook  # imported on use: only an XLSX upload needs it

    try:
        book = load_workbook(file, read_only=True, data_only=True)
        sheet = book.worksheets[0]
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, IndexError) as exc:
        raise ValidationError("无法读取该 XLSX 文件，请确认文件未损坏", field="file") from exc

    def numbered() -> Iterator[tuple[int, list[Any]]]:
        try:
            for number, values in enumerate(sheet.iter_rows(values_only=True), 1):
                yield number, list(values)
        finally:
            book.close()

    source = numbered()
    columns, ignored = _columns(_first_row(source))
    return Table("xlsx", "", columns, ignored, _rows(source, columns))


def detect_encoding(file: IO[bytes]) -> str:
    """utf-8-sig (a BOM), utf-8 (the whole file decodes), else gb18030 (if that decodes)."""
    file.seek(0)
    if file.read(3) == codecs.BOM_UTF8:
        return "utf-8-sig"
    for encoding in ("utf-8", "gb18030"):
        file.seek(0)
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            while chunk := file.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        return encoding
    raise ValidationError("无法识别文件编码，请保存为 UTF-8 或 GB18030 编码的 CSV", field="file")


def _csv(file: IO[bytes]) -> Table:
    encoding = detect_encoding(file)
    file.seek(0)
    text = io.TextIOWrapper(file, encoding=encoding, newline="")
    first = text.readline()
    dialect = "excel-tab" if "\t" in first and "," not in first else "excel"
    text.seek(0)
    reader = csv.reader(text, dialect)

    def numbered() -> Iterator[tuple[int, list[Any]]]:
        try:
            yield from enumerate(reader, 1)
        except csv.Error as exc:
            raise ValidationError(
                f"CSV 第 {reader.line_num} 行格式有误：引号不成对或字段过长", field="file"
            ) from exc

    source = numbered()
    columns, ignored = _columns(_first_row(source))
    return Table("csv", encoding, columns, ignored, _rows(source, columns))
