"""Reading an uploaded CSV or XLSX file into a header and numbered rows, for the back office's imports,
and writing one, streamed, for its exports (`write_csv`, `write_xlsx`).

CSV may be UTF-8 (with or without a BOM, as Excel saves it) or GB18030/GBK (what Excel on a Chinese
Windows saves as "CSV"). XLSX is read from its first worksheet with openpyxl in read-only mode, cached
values rather than formulas, through defusedxml (no entity expansion); a file that unpacks to more than
`MAX_UNPACKED_BYTES` is refused before parsing. Row numbers are the ones a spreadsheet shows (the header
is row 1); blank rows are skipped. CPU-bound: call `read_sheet` through `asyncio.to_thread`.

Writing takes the lines in batches (an async iterator), so memory does not grow with the file:
- CSV (UTF-8 with a BOM, so Excel reads the Chinese): each batch goes out as one chunk;
- XLSX: openpyxl's write-only workbook keeps each appended row in its temporary file, not in memory;
  the finished workbook (a zip, written only at the end) is saved to a temporary file and sent in chunks.
Text cells a spreadsheet would run as a formula (`=`, `+`, `-`, `@`) are prefixed with `'` (`safe_text`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import tempfile
import warnings
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import IO, Any, Literal

import openpyxl
from openpyxl import Workbook

from handlers.core.errors import ValidationError

Format = Literal["csv", "xlsx"]
Cell = str | int | float | bool | None
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
FIELD = "file"
Write = Callable[[bytes], Awaitable[None]]
Lines = AsyncIterator[list[list[Any]]]
CHUNK = 64 * 1024
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


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


def safe_text(value: str | None) -> str:
    """A text cell as written: a spreadsheet would run one starting like a formula, so it gets a `'`."""
    text = value or ""
    return "'" + text if text.startswith(_FORMULA) else text


def _csv_bytes(lines: Sequence[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(lines)
    return buffer.getvalue().encode()


async def write_csv(header: Sequence[str], lines: Lines, write: Write) -> int:
    """The header, then each batch of lines as one chunk; returns how many lines were written."""
    await write("\ufeff".encode() + _csv_bytes([header]))
    count = 0
    async for batch in lines:
        await write(_csv_bytes(batch))
        count += len(batch)
    return count


def _save(workbook: Workbook, target: IO[bytes]) -> None:
    workbook.save(target)
    target.seek(0)


async def write_xlsx(header: Sequence[str], lines: Lines, write: Write, *, title: str) -> int:
    """The lines into a write-only workbook (one sheet called `title`), batch by batch, then the file
    in chunks; returns how many lines were written."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title)
    sheet.append(list(header))
    count = 0
    with tempfile.TemporaryFile() as target:
        try:
            async for batch in lines:
                for line in batch:
                    sheet.append(line)
                count += len(batch)
        finally:  # saving also removes openpyxl's own temporary file of the rows, even after a failure
            await asyncio.to_thread(_save, workbook, target)
        while chunk := await asyncio.to_thread(target.read, CHUNK):
            await write(chunk)
    return count
