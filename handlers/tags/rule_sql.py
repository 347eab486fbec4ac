"""An automatic tag's rule as one SQL query of the member ids it selects (`:merchant`, `:now` and the
rule's own parameters, always bound, never interpolated).

Purchases count when completed (not refunded) and made in the rule's window ending at `now`; erased
members are never selected. A member's tier is their `member_tier` row, or the ladder's first tier
when they never changed tier (`base_tier`). Preferred category: the product catalogue's category of
the item's SKU, else the category the till sent with the item.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from handlers.rules import tag_rules

_MEMBERS = "SELECT m.id FROM member m{joins}\n WHERE m.merchant_id = :merchant AND m.anonymized_at IS NULL"
_PURCHASES = """
SELECT p.member_id AS id
  FROM purchase p JOIN member m ON m.id = p.member_id
 WHERE p.merchant_id = :merchant AND p.status = 'completed' AND p.created_at >= :since AND p.created_at < :now
   AND m.anonymized_at IS NULL
 GROUP BY p.member_id"""
_RFM_HAVING = """
HAVING (max(p.created_at) >= :recent_since) = :recent
   AND (count(*) >= :frequency) = :frequent
   AND (sum(p.paid_fen) >= :monetary) = :big"""
_PREFERENCE = """
SELECT top.id FROM (
    SELECT DISTINCT ON (p.member_id) p.member_id AS id, k.key
      FROM purchase p
      JOIN member m ON m.id = p.member_id
      CROSS JOIN LATERAL jsonb_array_elements(p.items) AS i(item)
      LEFT JOIN product pr ON pr.merchant_id = p.merchant_id AND pr.sku = i.item->>'sku'
      CROSS JOIN LATERAL (SELECT {key} AS key) k
     WHERE p.merchant_id = :merchant AND p.status = 'completed' AND p.created_at >= :since
       AND p.created_at < :now AND m.anonymized_at IS NULL AND k.key IS NOT NULL AND k.key <> ''
     GROUP BY p.member_id, k.key
     ORDER BY p.member_id, sum((i.item->>'qty')::bigint * (i.item->>'unit_price_fen')::bigint) DESC, k.key
) top
 WHERE top.key = ANY(:values)"""
_COUPON = (
    "EXISTS (SELECT 1 FROM coupon c WHERE c.member_id = m.id AND c.status = 'issued'"
    " AND c.valid_until > :now{templates})"
)
_KEYS = {
    "category": "COALESCE(NULLIF(pr.category, ''), i.item->>'category')",
    "sku": "i.item->>'sku'",
}


@dataclass(frozen=True, slots=True)
class Query:
    sql: str
    params: dict[str, Any]


def _bounded(column: str, low: int | None, high: int | None, params: dict[str, Any]) -> str:
    clauses = []
    if low is not None:
        clauses.append(f"{column} >= :low")
        params["low"] = low
    if high is not None:
        clauses.append(f"{column} <= :high")
        params["high"] = high
    return " AND ".join(clauses)


def compile_rule(
    rule: dict[str, Any], *, merchant_id: int, now: datetime, today: date, base_tier: str
) -> Query:
    """The query selecting the members `rule` (normalised by `tag_rules.parse_rule`) tags at `now`;
    `today` is the merchant-local date (ages and birthdays)."""
    params: dict[str, Any] = {"merchant": merchant_id}
    kind = rule["type"]
    if "window_days" in rule:
        params["since"] = now - timedelta(days=rule["window_days"])
        params["now"] = now
    joins, where = "", ""
    match kind:
        case "rfm":
            recent, frequent, big = tag_rules.RFM_BANDS[rule["segment"]]
            params.update(
                recent_since=now - timedelta(days=rule["recency_days"]),
                frequency=rule["frequency"],
                monetary=rule["monetary_fen"],
                recent=recent,
                frequent=frequent,
                big=big,
            )
            return Query(_PURCHASES + _RFM_HAVING, params)
        case "avg_ticket":
            having = _bounded("avg(p.paid_fen)", rule["min_fen"], rule["max_fen"], params)
            return Query(f"{_PURCHASES}\nHAVING {having}", params)
        case "preference":
            params["values"] = rule["values"]
            return Query(_PREFERENCE.format(key=_KEYS[rule["by"]]), params)
        case "tier":
            joins = "\n  LEFT JOIN member_tier t ON t.member_id = m.id"
            where = "COALESCE(t.tier_code, :base_tier) = ANY(:tiers)"
            params.update(base_tier=base_tier, tiers=rule["tiers"])
        case "gender":
            where = "m.gender = ANY(:genders)"
            params["genders"] = rule["genders"]
        case "source":
            where = "m.source = ANY(:sources)"
            params["sources"] = rule["sources"]
        case "age":
            earliest, latest = tag_rules.birthday_bounds(today, rule["min_age"], rule["max_age"])
            clauses = ["m.birthday IS NOT NULL"]
            if earliest is not None:
                clauses.append("m.birthday >= :born_from")
                params["born_from"] = earliest
            if latest is not None:
                clauses.append("m.birthday <= :born_to")
                params["born_to"] = latest
            where = " AND ".join(clauses)
        case "birthday_month":
            where = "EXTRACT(MONTH FROM m.birthday)::integer = ANY(:months)"
            params["months"] = rule["months"]
        case "store":
            where = "m.store_id = ANY(:store_ids)"
            params["store_ids"] = rule["store_ids"]
        case "staff":
            where = "m.acquired_by_id = ANY(:staff_ids)"
            params["staff_ids"] = rule["staff_ids"]
        case "churn":
            where = "m.last_visit_at < :churn_before"
            params["churn_before"] = now - timedelta(days=rule["days"])
        case "points":
            joins = "\n  LEFT JOIN points_account a ON a.member_id = m.id"
            where = _bounded("COALESCE(a.balance, 0)", rule["min"], rule["max"], params)
        case "unused_coupon":
            templates = " AND c.template_id = ANY(:templates)" if rule["template_ids"] is not None else ""
            where = _COUPON.format(templates=templates)
            params["now"] = now
            if templates:
                params["templates"] = rule["template_ids"]
        case _:
            raise ValueError(f"unknown rule type {kind!r}")
    return Query(f"{_MEMBERS.format(joins=joins)}\n   AND {where}", params)
