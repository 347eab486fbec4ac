"""Console page of segments (人群): a builder of conditions over tags and member attributes whose
audience count updates as it is edited (htmx, the segments API's preview), saving, and the saved list.

The builder turns up to `ROWS` condition rows, combined with AND or OR, into the segments API's
expression; the advanced box takes an expression as JSON instead. Counting and saving are the API's
handlers (`preview`, `create_segment`), which validate the expression and name what is wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from webhooks import admin_segments, admin_tags
from webhooks.console.base import (
    FormErrors,
    api,
    form,
    page,
    parse,
    redirect,
    render,
    submit,
    whole_number,
    yuan_to_fen,
)
from webhooks.console.security import Console

routes = web.RouteTableDef()
ROWS = 4
# attribute -> (label, ops offered, how a typed value is read)
ATTRIBUTES: dict[str, tuple[str, tuple[tuple[str, str], ...], str]] = {
    "last_visit_days": ("距上次到店天数", (("gte", "≥"), ("lte", "≤"), ("between", "介于")), "count"),
    "registered_days": ("注册天数", (("gte", "≥"), ("lte", "≤"), ("between", "介于")), "count"),
    "lifetime_spend_fen": ("累计消费（元）", (("gte", "≥"), ("lte", "≤"), ("between", "介于")), "yuan"),
    "points": ("积分", (("gte", "≥"), ("lte", "≤"), ("between", "介于")), "count"),
    "age": ("年龄", (("gte", "≥"), ("lte", "≤"), ("between", "介于")), "count"),
    "gender": ("性别（male/female）", (("in", "是"),), "text"),
    "tier": ("等级代码", (("in", "是"),), "text"),
    "birthday_month": ("生日月份", (("in", "是"),), "count"),
    "store_id": ("开卡门店编号", (("in", "是"),), "count"),
    "subscribed": ("关注公众号（是/否）", (("eq", "="),), "flag"),
    "blocked": ("已冻结（是/否）", (("eq", "="),), "flag"),
}
FLAGS = {"是": True, "否": False, "true": True, "false": False, "1": True, "0": False}


def _number(raw: str, kind: str) -> Any:
    return yuan_to_fen(raw) if kind == "yuan" else (int(raw) if raw.isdigit() else raw)


def _value(kind: str, op: str, raw: str) -> Any:
    parts = [p.strip() for p in re.split(r"[,，、\s]+", raw.strip()) if p.strip()]
    if kind == "flag":
        return FLAGS.get(raw.strip(), raw.strip())
    if op == "between":
        return [_number(p, kind) for p in parts]
    if op == "in":
        return [_number(p, kind) if kind != "text" else p for p in parts]
    return _number(raw.strip(), kind)


def expression(data: dict[str, str]) -> dict[str, Any]:
    """The expression the builder's form describes (or the advanced JSON, when given)."""
    advanced = data.get("advanced", "").strip()
    if advanced:
        try:
            parsed = json.loads(advanced)
        except json.JSONDecodeError as exc:
            raise FormErrors({"advanced": f"JSON 格式不正确（第 {exc.lineno} 行）"}) from None
        if not isinstance(parsed, dict):
            raise FormErrors({"advanced": "须为一个 JSON 对象"})
        return parsed
    terms: list[dict[str, Any]] = []
    for row in range(ROWS):
        field, raw = data.get(f"c{row}_field", ""), data.get(f"c{row}_value", "")
        if field.startswith("tag:") and field[4:].isdigit():
            test: dict[str, Any] = {"tag": int(field[4:])}
            terms.append({"not": test} if data.get(f"c{row}_op") == "not" else test)
        elif field in ATTRIBUTES and raw.strip():
            kind = ATTRIBUTES[field][2]
            op = data.get(f"c{row}_op", "")
            terms.append({"attr": field, "op": op, "value": _value(kind, op, raw)})
    if not terms:
        raise FormErrors({"form": "请至少填写一个条件"})
    return {"or" if data.get("mode") == "or" else "and": terms}


async def _page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    segments = await api(request, console, admin_segments.list_segments)
    tags = await api(request, console, admin_tags.list_tags)
    context = {
        "segments": segments.items,
        "tags": tags.items,
        "attributes": ATTRIBUTES,
        "rows": range(ROWS),
        "errors": errors or {},
        "values": values or {},
        "saved": request.query.get("saved"),
    }
    return render(request, "segments.html", console, context, status=status, section="segments")


@routes.get("/admin/segments")
@page()
async def segments(request: web.Request, console: Console) -> web.StreamResponse:
    return await _page(request, console)


def _errors(found: dict[str, str]) -> dict[str, str]:
    return {("form" if key.startswith("expression") else key): message for key, message in found.items()}


@routes.post("/admin/segments/preview")
@page()
async def preview(request: web.Request, console: Console) -> web.StreamResponse:
    """How many members the builder's conditions select now, with a masked sample (htmx fragment)."""
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(admin_segments.PreviewIn, {"expression": expression(data), "sample": 5})
        found = await api(request, console, admin_segments.preview, body=body)
        return render(request, "segment_count.html", console, {"found": found, "errors": {}})

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return render(request, "segment_count.html", console, {"found": None, "errors": _errors(errors)})

    return await submit(attempt, refused, passes=())


@routes.post("/admin/segments")
@page()
async def save(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        body = parse(
            admin_segments.SegmentIn, {"name": data.get("name", "").strip(), "expression": expression(data)}
        )
        created = await api(request, console, admin_segments.create_segment, body=body)
        return redirect(request, f"/admin/segments?saved={created.id}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _page(request, console, errors=_errors(errors), values=data, status=400)

    return await submit(attempt, refused)


# Tags --------------------------------------------------------------------------------------------


async def _tags_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    tags = await api(request, console, admin_tags.list_tags)
    context = {
        "tags": tags.items,
        "errors": errors or {},
        "values": values or {},
        "created": request.query.get("created"),
    }
    return render(request, "tags.html", console, context, status=status, section="segments")


@routes.get("/admin/tags")
@page()
async def tags(request: web.Request, console: Console) -> web.StreamResponse:
    """The tags with their member counts; create a manual tag, or an automatic one from a rule."""
    return await _tags_page(request, console)


@routes.post("/admin/tags")
@page()
async def create_tag(request: web.Request, console: Console) -> web.StreamResponse:
    data = await form(request)
    raw: dict[str, Any] = {"name": data.get("name", "").strip()}

    async def attempt() -> web.StreamResponse:
        rule = data.get("rule", "").strip()
        if rule:
            try:
                raw["rule"] = json.loads(rule)
            except json.JSONDecodeError as exc:
                raise FormErrors({"rule": f"JSON 格式不正确（第 {exc.lineno} 行）"}) from None
        body = parse(admin_tags.TagIn, raw)
        created = await api(request, console, admin_tags.create_tag, body=body)
        return redirect(request, f"/admin/tags?created={created.id}")

    async def refused(found: dict[str, str]) -> web.StreamResponse:
        errors = {("rule" if key.startswith("rule") else key): message for key, message in found.items()}
        return await _tags_page(request, console, errors=errors, values=data, status=400)

    return await submit(attempt, refused)


@routes.post(r"/admin/members/{member_id:\d+}/tags")
@page()
async def tag_member(request: web.Request, console: Console) -> web.StreamResponse:
    """Apply (or, with `remove`, take off) a manual tag on the member's page."""
    data = await form(request)
    member_id = int(request.match_info["member_id"])
    tag_id = whole_number(data.get("tag_id", ""))

    async def attempt() -> web.StreamResponse:
        if data.get("remove") == "true":
            held = parse(admin_tags.TagMemberPath, {"tag_id": tag_id, "member_id": member_id})
            await api(request, console, admin_tags.remove_tag, path=held)
        else:
            tag = parse(admin_tags.TagPath, {"tag_id": tag_id})
            body = parse(admin_tags.ApplyIn, {"member_id": member_id})
            await api(request, console, admin_tags.apply_tag, body=body, path=tag)
        return redirect(request, f"/admin/members/{member_id}?done=tag")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        message = next(iter(errors.values()))
        return render(request, "error.html", console, {"status": 400, "message": message}, status=400)

    return await submit(attempt, refused, passes=(403, 404))
