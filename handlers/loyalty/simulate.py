"""What-if: replay recorded purchases under a proposed earn rule set, beside the current one.

Every completed (not refunded) purchase of the last `days` days is fed to the earn engine exactly as
it was recorded: its stored items, the amount actually paid, its store, its time, and the member's
snapshots taken at purchase time (tier code, period spend before the purchase, points earned earlier
that day). The daily cap therefore sees the points the member really had that day, not what the
proposed rules would have granted earlier that day. Campaign pools are left out (they are budgets,
not rules). Points are priced with the programme's `points_per_yuan_cash`.

Purchases are read in id order in fixed-size batches, so memory stays bounded however many there are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from handlers.core.errors import ValidationError
from handlers.loyalty import config as loyalty_config
from handlers.rules.earn import Item, MemberInfo, Purchase, RuleSet, compute_earn, points_to_fen
from models.merchant import Store
from models.purchase import Purchase as PurchaseRow
from models.purchase import PurchaseStatus

MAX_DAYS = 366
BATCH = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    rule_set_version: int
    points: int
    cost_fen: int


@dataclass(frozen=True, slots=True)
class Simulation:
    since: datetime
    until: datetime
    purchases: int
    recorded_points: int  # what the purchases actually earned when they happened
    current: Outcome
    proposed: Outcome

    @property
    def difference_points(self) -> int:
        return self.proposed.points - self.current.points

    @property
    def difference_fen(self) -> int:
        return self.proposed.cost_fen - self.current.cost_fen


@dataclass(frozen=True, slots=True)
class Replayed:
    """A recorded purchase as the engine sees it."""

    purchase: Purchase
    member: MemberInfo
    recorded_points: int


def items_from_json(raw: object) -> tuple[Item, ...]:
    """A purchase's stored items; entries that are not well-formed items are left out."""
    if not isinstance(raw, list):
        return ()
    items: list[Item] = []
    for entry in raw:
        if not isinstance(entry, Mapping):
            continue
        sku, category = entry.get("sku"), entry.get("category", "")
        qty, price = entry.get("qty"), entry.get("unit_price_fen")
        if (
            isinstance(sku, str)
            and isinstance(category, str)
            and type(qty) is int
            and type(price) is int
            and qty >= 1
            and price >= 0
        ):
            items.append(Item(sku=sku, category=category, qty=qty, unit_price_fen=price))
    return tuple(items)


def replayed(row: PurchaseRow, store_codes: Mapping[int, str]) -> Replayed:
    purchase = Purchase(
        amount_fen=max(row.paid_fen, 0),
        items=items_from_json(row.items),
        store_code=store_codes.get(row.store_id, "") if row.store_id is not None else "",
        at=row.created_at,
    )
    member = MemberInfo(
        tier_code=row.tier_code,
        period_spend_fen=max(row.period_spend_fen, 0),
        points_today=max(row.points_today_before, 0),
    )
    return Replayed(purchase, member, row.points_earned)


def earn(replay: Replayed, rules: RuleSet) -> int:
    return compute_earn(replay.purchase, replay.member, rules).points


async def recorded(merchant_id: int, since: datetime, until: datetime) -> AsyncIterator[Replayed]:
    """Completed purchases in [since, until), oldest id first, loaded `BATCH` rows at a time."""
    codes = dict(await Store.filter(merchant_id=merchant_id).values_list("id", "code"))
    last_id = 0
    while True:
        rows = await (
            PurchaseRow.filter(
                merchant_id=merchant_id,
                status=PurchaseStatus.COMPLETED,
                created_at__gte=since,
                created_at__lt=until,
                id__gt=last_id,
            )
            .order_by("id")
            .limit(BATCH)
        )
        for row in rows:
            yield replayed(row, codes)
        if len(rows) < BATCH:
            return
        last_id = rows[-1].id


async def simulate(merchant_id: int, proposed_raw: Any, *, days: int, now: datetime) -> Simulation:
    """Current rules against `proposed_raw` (validated; nothing is saved) over the last `days` days."""
    if not 1 <= days <= MAX_DAYS:
        raise ValidationError(f"days 须在 1 到 {MAX_DAYS} 之间", field="days")
    current = await loyalty_config.current_rules(merchant_id)
    proposed = loyalty_config.parse_rules(proposed_raw, current.version + 1)
    cash = (await loyalty_config.program(merchant_id)).points_per_yuan_cash
    since = now - timedelta(days=days)
    count = recorded_points = current_points = proposed_points = 0
    async for replay in recorded(merchant_id, since, now):
        count += 1
        recorded_points += replay.recorded_points
        current_points += earn(replay, current)
        proposed_points += earn(replay, proposed)
    return Simulation(
        since=since,
        until=now,
        purchases=count,
        recorded_points=recorded_points,
        current=Outcome(current.version, current_points, points_to_fen(current_points, cash)),
        proposed=Outcome(proposed.version, proposed_points, points_to_fen(proposed_points, cash)),
    )
