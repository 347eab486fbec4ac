"""The dashboard's key figures for today, the last 7 and the last 30 days (merchant-local days), and a
30-day daily trend — what the analyses (`handlers/analytics`) do not answer per period: the dashboard
takes the points liability, the warnings and the low-stock items from them. Live queries over the
member and purchase tables (indexed by merchant and time). Definitions:
- new members: registered in the period (erased members included: they were new then);
- active members: a till purchase or check-in in the period (the member's `last_visit_at`, kept by
  triggers, is on or after the period's start — a member whose latest visit is in the period visited in it);
- revenue: cash paid over completed, not refunded purchases made in the period;
- repeat rate: of the members who bought in the period, the share who bought at least twice in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from handlers.core import queries
from models.merchant import Merchant

TREND_DAYS = 30
PERIODS = (("today", "今日", 1), ("7d", "近 7 天", 7), ("30d", "近 30 天", 30))


@dataclass(frozen=True, slots=True)
class Figures:
    key: str
    label: str
    new_members: int
    active_members: int
    revenue_fen: int
    buyers: int
    repeat_buyers: int

    @property
    def repeat_rate(self) -> float | None:
        return self.repeat_buyers / self.buyers if self.buyers else None


@dataclass(frozen=True, slots=True)
class TrendDay:
    day: date
    new_members: int
    revenue_fen: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    today: date
    periods: tuple[Figures, ...]
    trend: tuple[TrendDay, ...]


def _start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=zone)


_PERIOD_SQL = """
SELECT
  (SELECT count(*) FROM member WHERE merchant_id = :m AND registered_at >= :since
      AND registered_at <= :until) AS new_members,
  (SELECT count(*) FROM member WHERE merchant_id = :m AND anonymized_at IS NULL
      AND last_visit_at >= :since AND last_visit_at <= :until) AS active_members,
  (SELECT coalesce(sum(paid_fen), 0) FROM purchase WHERE merchant_id = :m AND status = 'completed'
      AND created_at >= :since AND created_at <= :until) AS revenue_fen,
  (SELECT count(*) FROM (SELECT member_id FROM purchase WHERE merchant_id = :m AND status = 'completed'
      AND created_at >= :since AND created_at <= :until GROUP BY member_id) AS b) AS buyers,
  (SELECT count(*) FROM (SELECT member_id FROM purchase WHERE merchant_id = :m AND status = 'completed'
      AND created_at >= :since AND created_at <= :until GROUP BY member_id
      HAVING count(*) >= 2) AS r) AS repeat_buyers
"""

_TREND_SQL = """
SELECT d.day,
  (SELECT count(*) FROM member WHERE merchant_id = :m
      AND registered_at >= (d.day::timestamp AT TIME ZONE :tz)
      AND registered_at < ((d.day + 1)::timestamp AT TIME ZONE :tz)) AS new_members,
  (SELECT coalesce(sum(paid_fen), 0) FROM purchase WHERE merchant_id = :m AND status = 'completed'
      AND created_at >= (d.day::timestamp AT TIME ZONE :tz)
      AND created_at < ((d.day + 1)::timestamp AT TIME ZONE :tz)) AS revenue_fen
FROM generate_series(:first::date, :last::date, interval '1 day') AS g(day_ts),
LATERAL (SELECT g.day_ts::date AS day) AS d
ORDER BY d.day
"""


async def dashboard(merchant: Merchant, *, now: datetime) -> Dashboard:
    zone = ZoneInfo(merchant.timezone)
    today = now.astimezone(zone).date()
    periods = []
    for key, label, days in PERIODS:
        since = _start(today - timedelta(days=days - 1), zone)
        row = await queries.fetch_one(_PERIOD_SQL, m=merchant.id, since=since, until=now)
        periods.append(
            Figures(
                key=key,
                label=label,
                new_members=int(row["new_members"]),
                active_members=int(row["active_members"]),
                revenue_fen=int(row["revenue_fen"]),
                buyers=int(row["buyers"]),
                repeat_buyers=int(row["repeat_buyers"]),
            )
        )
    trend_rows = await queries.fetch_rows(
        _TREND_SQL,
        m=merchant.id,
        tz=merchant.timezone,
        first=today - timedelta(days=TREND_DAYS - 1),
        last=today,
    )
    return Dashboard(
        today=today,
        periods=tuple(periods),
        trend=tuple(
            TrendDay(day=r["day"], new_members=int(r["new_members"]), revenue_fen=int(r["revenue_fen"]))
            for r in trend_rows
        ),
    )
