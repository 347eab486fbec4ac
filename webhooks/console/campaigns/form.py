"""The campaign form's fields per channel, turned into the campaigns API's body and back.

Each channel asks for its own fields (the fragment `campaign_fields.html` is swapped in by htmx when the
channel select changes):
- `mass` (公众号群发): `text`, and `wechat_tag` to send to the WeChat tag the segment is synced to;
- `custom` (客服消息): `text`;
- `subscribe` (小程序订阅消息): `template_id`, `page`, keyword rows `kw0…`/`kv0…` (thing1 → its content);
- `sms` (短信): `template_id` (the approved template) and its parameters `p0…`.
Errors the API names by its own path (`content.fields.thing1`, `content.params.0`) are put next to the
form field that holds that part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from webhooks.console.base import FormErrors, present, whole_number

CHANNELS = {"mass": "公众号群发", "custom": "客服消息", "subscribe": "小程序订阅消息", "sms": "短信"}
STATES = {
    "draft": "草稿",
    "scheduled": "已排期",
    "sending": "发送中",
    "paused": "已暂停",
    "done": "已完成",
    "cancelled": "已取消",
}
KEYWORD_ROWS = 5
SMS_PARAMS = 5
NUMBERS = ("holdout_pct", "throttle_per_second", "attach_points", "conversion_days")
DEFAULTS = {"holdout_pct": "10", "throttle_per_second": "50", "attach_points": "0", "conversion_days": "7"}
_TECHNICAL = re.compile(r"^[^：\n]{0,40}?[A-Za-z_][\w.]*：")
_NTH_PARAM = re.compile(r"第 (\d+) 个短信参数")


def progress(counts: Mapping[str, int]) -> dict[str, int]:
    """How far a send is: recipients done (sent, failed, skipped) of those to message (the holdout aside)."""
    total = sum(v for k, v in counts.items() if k != "holdout")
    left = counts.get("pending", 0) + counts.get("sending", 0)
    done = total - left
    return {"total": total, "done": done, "percent": 100 * done // total if total else 0}


def channel_of(data: Mapping[str, str]) -> str:
    channel = data.get("channel", "")
    return channel if channel in CHANNELS else "mass"


def _keywords(data: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The subscribe rows as {keyword: expression}, and {keyword: row field} for errors."""
    fields: dict[str, str] = {}
    where: dict[str, str] = {}
    errors: dict[str, str] = {}
    for n in range(KEYWORD_ROWS):
        keyword, value = data.get(f"kw{n}", "").strip(), data.get(f"kv{n}", "")
        if not keyword and not value.strip():
            continue
        if not keyword:
            errors[f"kw{n}"] = "请填写关键词，如 thing1"
        elif keyword in fields:
            errors[f"kw{n}"] = f"关键词 {keyword} 重复了"
        elif not value.strip():
            errors[f"kv{n}"] = f"请填写关键词 {keyword} 的内容"
        else:
            fields[keyword], where[keyword] = value.strip(), f"kv{n}"
    if errors:
        raise FormErrors(errors)
    if not fields:
        raise FormErrors({"kw0": "订阅消息至少需要一个关键词及其内容"})
    return fields, where


def _params(data: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The SMS template parameters in order, and the form field of each (for errors)."""
    params = [(f"p{n}", data.get(f"p{n}", "").strip()) for n in range(SMS_PARAMS)]
    filled = [(name, value) for name, value in params if value]
    if not filled:
        raise FormErrors({"p0": "请填写短信模板的参数（至少一个）"})
    return [value for _, value in filled], [name for name, _ in filled]


def content_of(channel: str, data: Mapping[str, str], tags: Mapping[int, int | None]) -> dict[str, Any]:
    """The API's `content` for the channel from the form (FormErrors for what the form itself can tell)."""
    if channel in ("mass", "custom"):
        content: dict[str, Any] = {"text": data.get("text", "")}
        if channel == "mass" and data.get("wechat_tag"):
            segment = whole_number(data.get("segment_id", ""))
            tag = tags.get(segment) if isinstance(segment, int) else None
            if tag is None:
                raise FormErrors({"wechat_tag": "所选人群还没有同步到微信标签，请先在人群页同步"})
            content["wechat_tag_id"] = tag
        return content
    if channel == "subscribe":
        fields, _ = _keywords(data)
        content = {"fields": fields}
        if page := data.get("page", "").strip():
            content["page"] = page
        return content
    return {"params": _params(data)[0]}


def campaign_body(data: Mapping[str, str], tags: Mapping[int, int | None]) -> dict[str, Any]:
    """The campaigns API's CampaignIn body from the form (numbers left as typed when they are not
    numbers, for the API's model to refuse by name)."""
    channel = channel_of(data)
    values = present(data, "name", "segment_id", "attach_coupon_template_id", *NUMBERS)
    coupon = values.get("attach_coupon_template_id")
    body: dict[str, Any] = {
        "name": values.get("name", ""),
        "channel": channel,
        "content": content_of(channel, data, tags),
        "template_id": data.get("template_id", "").strip() if channel in ("subscribe", "sms") else "",
        "segment_id": whole_number(values["segment_id"]) if "segment_id" in values else None,
        "attach_coupon_template_id": whole_number(coupon) if coupon is not None else None,
    }
    for name in NUMBERS:
        if name in values:
            body[name] = whole_number(values[name])
    return body


def form_values(campaign: Any) -> dict[str, str]:
    """A saved campaign (the API's CampaignOut) as the form shows it, for editing the draft."""
    content: Mapping[str, Any] = campaign.content
    values = {
        "name": campaign.name,
        "channel": campaign.channel,
        "template_id": campaign.template_id,
        "segment_id": "" if campaign.segment_id is None else str(campaign.segment_id),
        "attach_coupon_template_id": (
            "" if campaign.attach_coupon_template_id is None else str(campaign.attach_coupon_template_id)
        ),
        "text": str(content.get("text", "")),
        "page": str(content.get("page", "")),
        "wechat_tag": "1" if content.get("wechat_tag_id") is not None else "",
    }
    for name in NUMBERS:
        values[name] = str(getattr(campaign, name))
    for n, (keyword, source) in enumerate(dict(content.get("fields") or {}).items()):
        values[f"kw{n}"], values[f"kv{n}"] = str(keyword), str(source)
    for n, source in enumerate(list(content.get("params") or [])):
        values[f"p{n}"] = str(source)
    return values


def _plain(message: str) -> str:
    """An API message without its technical path prefix ("content.fields.thing1：…" → "…")."""
    return _TECHNICAL.sub("", message, count=1) or message


def form_errors(errors: Mapping[str, str], data: Mapping[str, str], prefix: str = "") -> dict[str, str]:
    """API error names (`content.fields.thing1`, `content.params.1`, `message.name` under `prefix`)
    as the form fields that hold the part, each with a message a merchant can read."""
    channel = channel_of(data)
    keyword_rows: dict[str, str] = {}
    param_fields: list[str] = []
    if channel == "subscribe":
        for n in range(KEYWORD_ROWS):
            if (keyword := data.get(f"kw{n}", "").strip()) and keyword not in keyword_rows:
                keyword_rows[keyword] = f"kv{n}"
    elif channel == "sms":
        param_fields = [f"p{n}" for n in range(SMS_PARAMS) if data.get(f"p{n}", "").strip()]
    shown: dict[str, str] = {}
    for name, message in errors.items():
        field = name.removeprefix(prefix) if prefix and name.startswith(prefix) else name
        parts = field.split(".")
        if parts[0] == "content" and len(parts) > 1:
            if parts[1] == "fields":
                field = keyword_rows.get(parts[2], "kw0") if len(parts) > 2 else "kw0"
            elif parts[1] == "params":
                nth = _NTH_PARAM.search(message)  # the whole list refused for one of its values
                index = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else -1
                index = int(nth.group(1)) - 1 if index < 0 and nth else index
                field = param_fields[index] if 0 <= index < len(param_fields) else "p0"
            elif parts[1] == "wechat_tag_id":
                field = "wechat_tag"
            else:
                field = parts[1]
        shown.setdefault(field, _plain(message))
    return shown


def local_moment(raw: str, zone: str) -> datetime | None:
    """A `datetime-local` input (merchant time) as an aware instant; None when empty; FormErrors when
    it is not a date and time."""
    text = raw.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FormErrors({"at": "请填写发送时间，如 2026-12-24 10:00"}) from None
    return moment.replace(tzinfo=ZoneInfo(zone)) if moment.tzinfo is None else moment
