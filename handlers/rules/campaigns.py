"""Campaign rules as pure functions: the send governor's budgets, who a channel can reach, the holdout
draw, the content limits per channel, which WeChat answers are retried, and the uplift of a campaign
with its confidence interval.

The governor skips with a reason rather than letting WeChat refuse:
- the merchant's marketing frequency cap: at most `marketing_per_day` campaign messages per member per
  merchant-local day, across campaigns (default 1);
- OA mass send: a service account's member receives at most 4 mass messages per calendar month
  (WECHAT.md §9), and the API takes 60 requests a minute;
- SMS: at most `sms_per_day` per member per local day;
- a subscribe message needs an unused grant of its template; a customer-service message the member's
  48-hour window with quota left (`handlers.rules.notices.usable`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from handlers.rules.notices import ChannelConfig, Reach, usable

Channel = Literal["mass", "subscribe", "custom", "sms"]
CHANNELS: tuple[Channel, ...] = ("mass", "subscribe", "custom", "sms")
MASS_PER_MEMBER_MONTH = 4
MASS_REQUESTS_PER_MINUTE = 60
MASS_MAX_OPENIDS = 10_000
MASS_MIN_OPENIDS = 2
MASS_TEXT_CHARS = 600
CUSTOM_TEXT_CHARS = 600
SMS_MAX_PARAMS = 10
SMS_PARAM_CHARS = 12  # a template variable's value (Tencent Cloud SMS, individual and enterprise default)
CLIENT_MSG_ID_BYTES = 64
MAX_ATTEMPTS = 5  # per recipient: retried WeChat answers (45009, busy, 5xx) up to this, then failed
# Subscribe keyword types and the characters their value may have (WECHAT.md §4; the simulator's own).
SUBSCRIBE_LIMITS = {
    "thing": 20,
    "name": 10,
    "phrase": 5,
    "symbol": 5,
    "number": 32,
    "letter": 32,
    "character_string": 32,
    "phone_number": 17,
    "car_number": 8,
    "amount": 32,
    "time": 32,
    "date": 32,
}
_KEYWORD = re.compile(r"^([a-z_]+?)([0-9]{1,2})$")
_PHONE = re.compile(r"^\+?[0-9]{6,15}$")
RETRIED = frozenset({-1, 45009, 45011, 43117})  # WeChat busy or rate limits: try again later
Z_95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Caps:
    """A merchant's budgets (the issue's defaults)."""

    marketing_per_day: int = 1
    mass_per_month: int = MASS_PER_MEMBER_MONTH
    sms_per_day: int = 1


@dataclass(frozen=True, slots=True)
class Touches:
    """Campaign messages a member was already given (claimed, i.e. sent or in flight)."""

    marketing_today: int = 0
    mass_this_month: int = 0
    sms_today: int = 0


def budget_refusal(channel: Channel, touches: Touches, caps: Caps) -> str | None:
    """None if one more `channel` message fits the member's budgets, else the reason it does not."""
    if touches.marketing_today >= caps.marketing_per_day:
        return "frequency_cap"
    if channel == "mass" and touches.mass_this_month >= caps.mass_per_month:
        return "mass_monthly_quota"
    if channel == "sms" and touches.sms_today >= caps.sms_per_day:
        return "sms_daily_cap"
    return None


@dataclass(frozen=True, slots=True)
class Contact:
    """How a member can be reached, as far as campaigns go."""

    oa_openid: str | None  # following the Official Account
    mp_openid: str | None
    phone: str | None
    sms_consent: bool
    subscribe_grants: int = 0
    window_opened_at: datetime | None = None
    window_sent: int = 0


def reach_refusal(channel: Channel, contact: Contact, template_id: str, now: datetime) -> str | None:
    """None if `channel` can carry a campaign message to the member now, else why not."""
    if channel == "mass":
        return None if contact.oa_openid else "not_following"
    if channel == "sms":
        if not contact.phone or not _PHONE.match(contact.phone):
            return "no_phone"
        return None if contact.sms_consent else "no_sms_consent"
    reach = Reach(
        contact.oa_openid,
        contact.mp_openid,
        contact.subscribe_grants,
        contact.window_opened_at,
        contact.window_sent,
    )
    config = ChannelConfig((channel,), "", template_id if channel == "subscribe" else "")
    return usable(channel, config, reach, now)


def in_holdout(campaign_id: int, member_id: int, pct: int) -> bool:
    """The member is in the campaign's holdout share: random across members, the same every time for
    one (campaign, member), so a re-plan never moves anyone. `pct` 0 holds nobody out."""
    if pct <= 0:
        return False
    digest = hashlib.sha256(f"holdout:{campaign_id}:{member_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < pct * 100


def local_day_start(now: datetime, tz: str) -> datetime:
    """Midnight of `now`'s merchant-local day (aware)."""
    local = now.astimezone(ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def local_month_start(now: datetime, tz: str) -> datetime:
    """The first of `now`'s merchant-local calendar month, at midnight (aware)."""
    return local_day_start(now, tz).replace(day=1)


def retried(errcode: int | None, http_status: int | None = None) -> bool:
    """WeChat (or the provider) did not take the message for a passing reason: try it again later.
    43004 (not following), 40003 (bad openid), 43101 (no grant) and the like are final."""
    if http_status is not None and http_status >= 500:
        return True
    return errcode in RETRIED


def retry_delay(attempts: int) -> timedelta:
    """The wait before a retried recipient is tried again (exponential, capped at 5 minutes)."""
    return timedelta(seconds=min(300, 5 * 2 ** max(attempts - 1, 0)))


# -- content ------------------------------------------------------------------------------------------


def subscribe_value_refusal(keyword: str, value: str) -> str | None:
    """None if `value` suits the subscribe keyword (thing1, amount2 …), else why not."""
    match = _KEYWORD.match(keyword)
    limit = SUBSCRIBE_LIMITS.get(match.group(1)) if match else None
    if limit is None:
        return f"关键词 {keyword} 应形如 thing1、amount2、time3"
    if not value:
        return f"关键词 {keyword} 的内容为空"
    if len(value) > limit:
        return f"关键词 {keyword} 的内容超过 {limit} 个字"
    if "\n" in value or "\r" in value:
        return f"关键词 {keyword} 的内容不能换行"
    return None


def text_refusal(channel: Channel, text: str) -> str | None:
    """None if `text` can go out as the channel's text message, else why not."""
    limit = MASS_TEXT_CHARS if channel == "mass" else CUSTOM_TEXT_CHARS
    if not text.strip():
        return "消息内容为空"
    if len(text) > limit:
        return f"消息内容超过 {limit} 个字"
    return None


def sms_params_refusal(params: Sequence[str]) -> str | None:
    if not 1 <= len(params) <= SMS_MAX_PARAMS:
        return f"短信模板参数须为 1–{SMS_MAX_PARAMS} 个"
    for n, value in enumerate(params):
        if not value.strip():
            return f"第 {n + 1} 个短信参数为空"
        if len(value) > SMS_PARAM_CHARS:
            return f"第 {n + 1} 个短信参数超过 {SMS_PARAM_CHARS} 个字"
    return None


def client_msg_id(campaign_id: int, member_id: int) -> str:
    """The anti-replay id of one campaign message to one member (well under WeChat's 64 bytes)."""
    return f"c{campaign_id}-m{member_id}"


def mass_client_msg_id(campaign_id: int, first_recipient_id: int) -> str:
    """The anti-replay id of one mass-send call: its batch's first recipient (a resend after a crash
    is the same call)."""
    return f"c{campaign_id}-r{first_recipient_id}"


# -- report -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Uplift:
    """Conversion of the messaged group minus the holdout's, with its 95% confidence interval (all
    as fractions; None when a group is empty)."""

    messaged_rate: float | None
    holdout_rate: float | None
    uplift: float | None
    low: float | None
    high: float | None


def uplift(messaged: int, messaged_converted: int, holdout: int, holdout_converted: int) -> Uplift:
    """Difference of two proportions with a Wald 95% interval (unpooled standard error)."""
    if (
        messaged_converted > messaged
        or holdout_converted > holdout
        or min(messaged_converted, holdout_converted) < 0
    ):
        raise ValueError("conversions cannot exceed the group or be negative")
    p1 = messaged_converted / messaged if messaged else None
    p2 = holdout_converted / holdout if holdout else None
    if p1 is None or p2 is None:
        return Uplift(p1, p2, None, None, None)
    diff = p1 - p2
    se = math.sqrt(p1 * (1 - p1) / messaged + p2 * (1 - p2) / holdout)
    return Uplift(p1, p2, diff, diff - Z_95 * se, diff + Z_95 * se)


def counts_by(rows: Sequence[Mapping[str, object]], key: str) -> dict[str, int]:
    """{row[key]: row["n"]} for grouped count rows."""
    return {str(row[key]): int(str(row["n"])) for row in rows}
