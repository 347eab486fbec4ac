"""What every analysis takes and answers: a `Window` (merchant, date range, store) and a `Report`
(typed columns, rows, a summary), written as JSON by the API or as CSV/XLSX lines by `lines`.

Dates are merchant-local days, both ends included. An analysis over a period uses the last 30 days
when no range is given (`Window.span`); a snapshot of members (tiers, gender and age, regions, churn,
consumption cycle) counts every member when no range is given, else the members registered in it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from handlers.core import sheets
from handlers.core.errors import ValidationError

Unit = Literal["text", "count", "fen", "points", "rate", "days", "date", "datetime", "bool"]
Grain = Literal["day", "week", "month", "quarter", "year"]
DEFAULT_DAYS = 30
MAX_DAYS = 3700  # ten years and some
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str  # the export's header (Chinese)
    unit: Unit = "count"


@dataclass(frozen=True, slots=True)
class Report:
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Window:
    merchant_id: int
    timezone: str
    today: date  # merchant-local
    date_from: date | None = None
    date_to: date | None = None
    store_id: int | None = None  # None: every store

    def __post_init__(self) -> None:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValidationError("date_from 不能晚于 date_to", field="date_from")
        if self.date_from and self.date_to and (self.date_to - self.date_from).days > MAX_DAYS:
            raise ValidationError(f"日期范围最长 {MAX_DAYS} 天", field="date_to")

    def span(self, default_days: int = DEFAULT_DAYS) -> tuple[date, date]:
        """The range of a period analysis: as given, else the last `default_days` days to today."""
        last = self.date_to or self.today
        first = self.date_from or (last - timedelta(days=default_days - 1))
        if first > last:
            raise ValidationError("date_from 不能晚于 date_to（未填 date_to 时为今天）", field="date_from")
        if (last - first).days > MAX_DAYS:
            raise ValidationError(f"日期范围最长 {MAX_DAYS} 天", field="date_from")
        return first, last

    def moment(self, day: date) -> datetime:
        """The start of a merchant-local day, in UTC."""
        return datetime.combine(day, time(), ZoneInfo(self.timezone)).astimezone(UTC)

    def registered(self) -> tuple[datetime, datetime]:
        """The registration instants a member snapshot counts: [from, to + 1 day), open ends unbounded."""
        since = self.moment(self.date_from) if self.date_from else datetime(1970, 1, 1, tzinfo=UTC)
        until = (
            self.moment(self.date_to + timedelta(days=1))
            if self.date_to
            else datetime(9999, 1, 1, tzinfo=UTC)
        )
        return since, until

    def params(self, **extra: Any) -> dict[str, Any]:
        """Bind values: `merchant`, `store` when a store is chosen, and `extra`."""
        values: dict[str, Any] = {"merchant": self.merchant_id, **extra}
        if self.store_id is not None:
            values["store"] = self.store_id
        return values

    def store_clause(self, column: str) -> str:
        """`TRUE` for every store, else `column = :store` (bind `store=self.store`)."""
        return "TRUE" if self.store_id is None else f"{column} = :store"


def rate(part: int | float, whole: int | float) -> float | None:
    return round(part / whole, 4) if whole else None


def periods(first: date, last: date, grain: Grain) -> list[date]:
    """Every period start from the one holding `first` to the one holding `last` (so empty periods show)."""
    start = period_of(first, grain)
    out: list[date] = []
    while start <= last:
        out.append(start)
        start = _next(start, grain)
    return out


def period_of(day: date, grain: Grain) -> date:
    if grain == "day":
        return day
    if grain == "week":
        return day - timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    if grain == "quarter":
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return date(day.year, 1, 1)


def whole_months(first: date, last: date) -> tuple[date, date]:
    """[month_first, month_end): the whole calendar months inside [first, last] (empty: equal or after)."""
    month_first = first if first.day == 1 else (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    after = last + timedelta(days=1)
    month_end = after if after.day == 1 else after.replace(day=1)
    return month_first, max(month_end, month_first)


def _next(start: date, grain: Grain) -> date:
    if grain == "day":
        return start + timedelta(days=1)
    if grain == "week":
        return start + timedelta(days=7)
    months = {"month": 1, "quarter": 3, "year": 12}[grain]
    index = start.year * 12 + start.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def period_label(start: date, grain: Grain) -> str:
    if grain == "year":
        return f"{start.year}"
    if grain == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    if grain == "month":
        return start.strftime("%Y-%m")
    return start.isoformat()


def _cell(value: Any, unit: Unit, zone: ZoneInfo) -> Any:
    if value is None:
        return ""
    if unit == "fen":
        return (Decimal(int(value)) / 100).quantize(CENT)
    if unit == "text":
        return sheets.safe_text(str(value))
    if unit == "datetime" and isinstance(value, datetime):
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    if unit == "date" and isinstance(value, date):
        return value.isoformat()
    if unit == "bool":
        return "是" if value else "否"
    return value


def header(report: Report) -> list[str]:
    return [f"{c.title}（元）" if c.unit == "fen" else c.title for c in report.columns]


async def lines(report: Report, timezone: str, batch: int = 500) -> AsyncIterator[list[list[Any]]]:
    """The report's rows as export lines (money in yuan, times merchant-local), `batch` at a time."""
    zone = ZoneInfo(timezone)
    for start in range(0, len(report.rows), batch):
        yield [
            [_cell(row.get(c.key), c.unit, zone) for c in report.columns]
            for row in report.rows[start : start + batch]
        ]


def keyed(rows: list[dict[str, Any]], key: str) -> Mapping[Any, dict[str, Any]]:
    return {row[key]: row for row in rows}
