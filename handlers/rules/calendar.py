"""Calendar arithmetic in a merchant's time zone: the local day, month steps, birthdays. One copy.

Instants are timezone-aware (UTC in storage); days are the merchant-local calendar dates.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def local_day(moment: datetime, tz: str) -> date:
    """The calendar date in zone `tz` at the aware instant `moment`."""
    if moment.utcoffset() is None:
        raise ValueError("moment must be timezone-aware")
    return moment.astimezone(ZoneInfo(tz)).date()


def day_bounds_utc(day: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of the local `day` as UTC instants; 23 or 25 hours long on DST change days."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    return start, end


def day_start(moment: datetime, tz: str) -> datetime:
    """The local midnight that began the day of `moment` (aware, in zone `tz`)."""
    return datetime.combine(local_day(moment, tz), time(), ZoneInfo(tz))


def year_start(moment: datetime, tz: str) -> datetime:
    """The local midnight of 1 January of the year of `moment` (aware, in zone `tz`)."""
    return datetime.combine(local_day(moment, tz).replace(month=1, day=1), time(), ZoneInfo(tz))


def days_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def add_months(day: date, months: int) -> date:
    """`day` moved by `months` calendar months, clamped to the end of a shorter month (31 Jan + 1 →
    28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, days_in_month(year, month)))


def next_month(day: date) -> date:
    """The first day of the month after the month of `day`."""
    return add_months(day.replace(day=1), 1)


def birthday_in(year: int, birthday: date) -> date:
    """The day a birthday is celebrated in `year` (29 February falls back to 28 February)."""
    if (birthday.month, birthday.day) == (2, 29) and not calendar.isleap(year):
        return date(year, 2, 28)
    return birthday.replace(year=year)


def due_birthday(birthday: date, registered: date, today: date, catch_up_days: int) -> date | None:
    """The celebrated day within the last `catch_up_days` days (today included), if the member was
    already registered on it."""
    for year in {today.year, (today - timedelta(days=catch_up_days - 1)).year}:
        day = birthday_in(year, birthday)
        if registered <= day <= today and (today - day).days < catch_up_days:
            return day
    return None
