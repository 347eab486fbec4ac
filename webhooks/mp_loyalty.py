"""Mini-program loyalty API for the logged-in member: points, ledger, check-in, card QR, tier.

Query parameters (the registry declares bodies and paths only) are validated here with pydantic
models, so a bad `cursor`, `limit` or `month` is a 400 naming the parameter.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, TypeVar
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from handlers.loyalty import checkin, points_view, tiers
from handlers.members import blocking, member_qr
from handlers.rules.calendar import local_day
from models.points import PointsKind
from webhooks.api import Call, In, Out, Routes
from webhooks.appkeys import RUNTIME
from webhooks.auth import MEMBER
from webhooks.mp import MerchantPath

routes = Routes("mp_loyalty")
Q = TypeVar("Q", bound=BaseModel)


class NextRewardOut(Out):
    days: int = Field(description="check-ins still needed, counting the next one")
    streak: int = Field(description="the streak length that earns the reward")
    points: int


class ExpiringOut(Out):
    points: int = Field(description=f"points expiring within {points_view.EXPIRING_DAYS} days")
    first_date: date | None = Field(description="the earliest of those expiry dates (merchant-local)")


class PointsOut(Out):
    balance: int
    pending: int = Field(description="earned, credited once the refund window has passed")
    lifetime_earned: int
    expiring_soon: ExpiringOut


class LedgerItemOut(Out):
    id: int
    delta: int
    kind: PointsKind
    kind_label: str = Field(examples=["签到积分"])
    reason: str
    balance_after: int
    created_at: datetime


class LedgerOut(Out):
    items: list[LedgerItemOut]
    next_cursor: int | None = Field(description="pass as ?cursor= for older rows; null at the end")


class CheckinOut(Out):
    day: date
    already_checked_in: bool = Field(description="true: today was already checked in, nothing changed")
    streak: int
    points: int = Field(description="points earned by this check-in, streak bonus included")
    bonus: int = Field(description="the streak-reward part of `points`")
    balance: int
    next_reward: NextRewardOut | None
    message: str


class MakeupIn(In):
    day: date = Field(description="the missed day to make up (merchant-local)", examples=["2024-05-01"])


class MakeupOut(Out):
    day: date
    streak: int = Field(description="the streak ending at the made-up day")
    current_streak: int
    cost: int
    balance: int


class CalendarDayOut(Out):
    day: date
    checked: bool
    makeup: bool
    today: bool
    future: bool
    can_make_up: bool


class CalendarOut(Out):
    month: str = Field(examples=["2024-05"])
    days: list[CalendarDayOut]
    streak: int
    checked_today: bool
    next_reward: NextRewardOut | None
    makeup_cost: int
    makeups_left: int | None = Field(description="make-ups left this month; null: no monthly limit")


class CardOut(Out):
    token: str = Field(description="the rotating QR payload (≤ 32 characters)")
    expires_in: int = Field(description="seconds until a scan refuses this token")
    refresh_in: int = Field(description="seconds until a fresh token is available; refresh then")
    member_code: str = Field(description="static code to type at the till if the QR cannot be scanned")
    png: str = Field(description="the QR as a data:image/png;base64 URL")
    svg: str = Field(description="the QR as an SVG document")


class BenefitsOut(Out):
    discount_percent: int = Field(description="95 means 9.5折; 100 means no discount")
    points_multiplier: str = Field(examples=["1.5"])
    birthday_gift_points: int
    upgrade_gift_points: int
    lines: list[str] = Field(description="the benefits as short Chinese sentences")


class TierRefOut(Out):
    code: str
    name: str
    upgrade_cost_points: int | None


class TierOut(Out):
    code: str
    name: str
    rank: int
    since: datetime
    benefits: BenefitsOut
    next_tier: str | None = Field(description="name of the next tier up, null at the top")
    progress: str | None = Field(description="what it takes to reach the next tier")
    purchasable: list[TierRefOut] = Field(description="tiers that can be bought with points")


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class LedgerQuery(_Query):
    cursor: Annotated[int, Field(ge=1)] | None = None
    limit: Annotated[int, Field(ge=1, le=points_view.MAX_PAGE)] = points_view.DEFAULT_PAGE


class CalendarQuery(_Query):
    month: Annotated[str, Field(pattern=r"^2\d{3}-(0[1-9]|1[0-2])$")] | None = None


def _query(request: web.Request, model: type[Q]) -> Q:
    return model.model_validate({key: request.query.get(key) for key in request.query})


def _reward(reward: checkin.NextReward | None) -> NextRewardOut | None:
    if reward is None:
        return None
    return NextRewardOut(days=reward.days, streak=reward.streak, points=reward.points)


@routes.get("/api/mp/{merchant_slug}/points", path_model=MerchantPath, response=PointsOut, auth=MEMBER)
async def points_summary(call: Call[None, MerchantPath]) -> PointsOut:
    """The member's balance, pending points, lifetime earned and points expiring soon."""
    found = await points_view.summary(call.merchant.id, call.member.id, now=datetime.now(UTC))
    return points_out(found, call.merchant.timezone)


def points_out(found: points_view.PointsSummary, timezone: str) -> PointsOut:
    first = found.expiring_first_at
    return PointsOut(
        balance=found.balance,
        pending=found.pending,
        lifetime_earned=found.lifetime_earned,
        expiring_soon=ExpiringOut(
            points=found.expiring,
            first_date=first.astimezone(ZoneInfo(timezone)).date() if first else None,
        ),
    )


def ledger_out(page: points_view.LedgerPage) -> LedgerOut:
    items = [
        LedgerItemOut(
            id=r.id,
            delta=r.delta,
            kind=r.kind,
            kind_label=r.label,
            reason=r.reason,
            balance_after=r.balance_after,
            created_at=r.created_at,
        )
        for r in page.rows
    ]
    return LedgerOut(items=items, next_cursor=page.next_cursor)


@routes.get(
    "/api/mp/{merchant_slug}/points/ledger",
    path_model=MerchantPath,
    response=LedgerOut,
    auth=MEMBER,
    errors=(400,),
)
async def points_ledger(call: Call[None, MerchantPath]) -> LedgerOut:
    """The member's points history, newest first (?cursor=<next_cursor>&limit=1..100)."""
    query = _query(call.request, LedgerQuery)
    page = await points_view.ledger(call.merchant.id, call.member.id, cursor=query.cursor, limit=query.limit)
    return ledger_out(page)


@routes.post(
    "/api/mp/{merchant_slug}/checkin",
    path_model=MerchantPath,
    response=CheckinOut,
    auth=MEMBER,
    errors=(409,),
)
async def check_in(call: Call[None, MerchantPath]) -> CheckinOut:
    """Check in for today; a second check-in the same day answers `already_checked_in` and changes nothing."""
    result = await checkin.check_in(
        call.merchant, call.member.id, now=datetime.now(UTC), effects=call.effects
    )
    if result.already:
        message = "今天已经签到过了，明天再来吧"
    else:
        message = f"签到成功，获得 {result.points} 积分，已连续签到 {result.streak} 天"
    return CheckinOut(
        day=result.day,
        already_checked_in=result.already,
        streak=result.streak,
        points=result.points,
        bonus=result.bonus,
        balance=result.balance,
        next_reward=_reward(result.next_reward),
        message=message,
    )


@routes.post(
    "/api/mp/{merchant_slug}/checkin/makeup",
    path_model=MerchantPath,
    body=MakeupIn,
    response=MakeupOut,
    auth=MEMBER,
    errors=(400, 409),
)
async def make_up(call: Call[MakeupIn, MerchantPath]) -> MakeupOut:
    """补签 a missed day for points; refused with the reason (409 insufficient_points, …)."""
    result = await checkin.make_up(call.merchant, call.member.id, call.body.day, now=datetime.now(UTC))
    return MakeupOut(
        day=result.day,
        streak=result.streak,
        current_streak=result.current_streak,
        cost=result.cost,
        balance=result.balance,
    )


@routes.get(
    "/api/mp/{merchant_slug}/checkin/calendar",
    path_model=MerchantPath,
    response=CalendarOut,
    auth=MEMBER,
    errors=(400,),
)
async def calendar(call: Call[None, MerchantPath]) -> CalendarOut:
    """The check-in calendar of a month (?month=YYYY-MM, default this month)."""
    now = datetime.now(UTC)
    month = _query(call.request, CalendarQuery).month
    if month is None:
        today = local_day(now, call.merchant.timezone)
        year, number = today.year, today.month
    else:
        year, number = int(month[:4]), int(month[5:])
    view = await checkin.calendar(call.merchant, call.member.id, year, number, now=now)
    return CalendarOut(
        month=f"{year:04d}-{number:02d}",
        days=[
            CalendarDayOut(
                day=d.day,
                checked=d.checked,
                makeup=d.makeup,
                today=d.today,
                future=d.future,
                can_make_up=d.can_make_up,
            )
            for d in view.days
        ],
        streak=view.streak,
        checked_today=view.checked_today,
        next_reward=_reward(view.next_reward),
        makeup_cost=view.makeup_cost,
        makeups_left=view.makeups_left,
    )


@routes.get("/api/mp/{merchant_slug}/card", path_model=MerchantPath, response=CardOut, auth=MEMBER)
async def member_card(call: Call[None, MerchantPath]) -> CardOut:
    """The member card: a QR that rotates every 60 s (PNG and SVG) and the static member code."""
    issued = member_qr.issue_token(
        call.merchant, call.member.id, secret=call.request.app[RUNTIME].secret, now=datetime.now(UTC)
    )
    return CardOut(
        token=issued.token,
        expires_in=issued.expires_in,
        refresh_in=issued.refresh_in,
        member_code=call.member.code,
        png=member_qr.png_data_url(member_qr.qr_png(issued.token)),
        svg=member_qr.qr_svg(issued.token),
    )


@routes.get("/api/mp/{merchant_slug}/tier", path_model=MerchantPath, response=TierOut, auth=MEMBER)
async def tier(call: Call[None, MerchantPath]) -> TierOut:
    """The member's tier, its benefits, and what it takes to reach the next one."""
    return tier_out(await tiers.current(call.merchant, call.member.id, now=datetime.now(UTC)))


def tier_out(view: tiers.TierView) -> TierOut:
    benefits = view.tier.benefits
    return TierOut(
        code=view.tier.code,
        name=view.tier.name,
        rank=view.tier.rank,
        since=view.since,
        benefits=BenefitsOut(
            discount_percent=benefits.discount_percent,
            points_multiplier=member_qr.multiplier_text(benefits.points_multiplier),
            birthday_gift_points=benefits.birthday_gift_points,
            upgrade_gift_points=benefits.upgrade_gift_points,
            lines=member_qr.benefit_lines(benefits),
        ),
        next_tier=view.progress.next_tier.name if view.progress else None,
        progress=view.progress.message if view.progress else None,
        purchasable=[
            TierRefOut(code=t.code, name=t.name, upgrade_cost_points=t.upgrade_cost_points)
            for t in view.purchasable
        ],
    )


class TierUpgradeIn(In):
    tier: Annotated[
        str,
        Field(
            min_length=1,
            max_length=32,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="code of a tier that can be bought with points",
        ),
    ]
    idempotency_key: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


class TierUpgradeOut(Out):
    from_code: str
    to_code: str
    to_name: str
    gift_points: int


@routes.post(
    "/api/mp/{merchant_slug}/tier/upgrade",
    path_model=MerchantPath,
    body=TierUpgradeIn,
    response=TierUpgradeOut,
    auth=MEMBER,
    errors=(400, 409),
)
async def buy_tier(call: Call[TierUpgradeIn, MerchantPath]) -> TierUpgradeOut:
    """Upgrade by spending points (the tier's `upgrade_cost_points`); 409 if not allowed or not enough."""
    blocking.ensure_active(call.member)
    change = await tiers.buy_upgrade(
        call.merchant,
        call.member.id,
        call.body.tier,
        key=f"mp:{call.member.id}:{call.body.idempotency_key}",
        now=datetime.now(UTC),
        effects=call.effects,
    )
    return TierUpgradeOut(
        from_code=change.from_code,
        to_code=change.to_code,
        to_name=change.to_name,
        gift_points=change.gift_points,
    )
