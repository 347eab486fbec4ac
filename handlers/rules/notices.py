"""Which channel a member notice may go out on, and when: WeChat's rules as pure functions.

- OA template messages are for service notices only; each keyword value is at most 20 characters
  with no line breaks (WeChat strips the rest since 2023-05-04), so values are cut here, visibly.
- A mini-program subscribe message needs an unused one-time grant of that template (one grant, one
  send).
- A customer-service message needs the member's 48-hour window (opened by their last message or
  event) and a message left in its quota.
- Quiet hours (merchant-local, default 22:00–08:00) defer what is not urgent to their end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Channel = Literal["template", "subscribe", "custom"]
CHANNELS: tuple[Channel, ...] = ("template", "subscribe", "custom")
TEMPLATE_VALUE_CHARS = 20
CUSTOM_WINDOW = timedelta(hours=48)
CUSTOM_WINDOW_QUOTA = 5  # messages after one inbound message (WeChat's documented quota; it varies)
CUSTOM_TEXT_CHARS = 600


@dataclass(frozen=True, slots=True)
class QuietHours:
    """[start, end) in local time; start > end spans midnight (22:00–08:00). start == end: none."""

    start: time = time(22, 0)
    end: time = time(8, 0)

    def contains(self, moment: time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


def quiet_until(now: datetime, tz: str, quiet: QuietHours) -> datetime | None:
    """When the quiet hours around `now` end (aware, UTC-comparable), or None if `now` is not in them."""
    local = now.astimezone(ZoneInfo(tz))
    if not quiet.contains(local.time()):
        return None
    end = datetime.combine(local.date(), quiet.end, local.tzinfo)
    if end <= local:
        end = datetime.combine(local.date() + timedelta(days=1), quiet.end, local.tzinfo)
    return end


@dataclass(frozen=True, slots=True)
class Reach:
    """What memberbot knows about reaching one member right now."""

    oa_openid: str | None  # following the Official Account
    mp_openid: str | None  # known to the mini-program
    subscribe_grants: int  # unused one-time grants of the notice's subscribe template
    window_opened_at: datetime | None  # the member's last message or event to the OA
    window_sent: int  # customer-service messages sent since it opened


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """A notice kind's configuration as far as channels go: which are set up, in preference order."""

    order: tuple[Channel, ...]
    template_id: str
    subscribe_template_id: str


def usable(channel: Channel, config: ChannelConfig, reach: Reach, now: datetime) -> str | None:
    """None if `channel` can carry the notice to this member now, else the reason it cannot."""
    if channel == "template":
        if not config.template_id:
            return "no_template_configured"
        return None if reach.oa_openid else "not_following"
    if channel == "subscribe":
        if not config.subscribe_template_id:
            return "no_subscribe_template_configured"
        if not reach.mp_openid:
            return "no_mini_program"
        return None if reach.subscribe_grants > 0 else "no_subscribe_grant"
    if not reach.oa_openid:
        return "not_following"
    if reach.window_opened_at is None or now - reach.window_opened_at >= CUSTOM_WINDOW:
        return "outside_48h_window"
    return None if reach.window_sent < CUSTOM_WINDOW_QUOTA else "window_quota_used"


def choose(config: ChannelConfig, reach: Reach, now: datetime) -> tuple[Channel | None, tuple[str, ...]]:
    """The first channel in the configured order that can carry the notice, and why each earlier one
    could not (all the reasons when none can)."""
    reasons: list[str] = []
    for channel in config.order:
        reason = usable(channel, config, reach, now)
        if reason is None:
            return channel, tuple(reasons)
        reasons.append(f"{channel}:{reason}")
    return None, tuple(reasons)


def template_value(text: object) -> str:
    """A template keyword's value as WeChat shows it: one line, at most 20 characters (cut with …)."""
    flat = " ".join(str(text).split())
    if len(flat) <= TEMPLATE_VALUE_CHARS:
        return flat
    return flat[: TEMPLATE_VALUE_CHARS - 1] + "…"


def custom_text(text: str) -> str:
    """A customer-service text within a size WeChat accepts (it allows more; a notice needs less)."""
    text = text.strip()
    return text if len(text) <= CUSTOM_TEXT_CHARS else text[: CUSTOM_TEXT_CHARS - 1] + "…"


def valid_order(raw: Iterable[str]) -> tuple[Channel, ...]:
    """A channel preference order: known channels, each once, at least one; raises ValueError."""
    order: list[Channel] = []
    for name in raw:
        if name not in CHANNELS:
            raise ValueError(f"未知渠道 {name}（可选 template、subscribe、custom）")
        if name in order:
            raise ValueError(f"渠道 {name} 重复")
        order.append(name)
    if not order:
        raise ValueError("至少选择一个渠道")
    return tuple(order)
