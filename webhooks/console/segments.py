"""Console pages of segments (人群): a builder of conditions over tags and member attributes whose
audience count updates as it is edited (htmx, the segments API's preview), saving, the saved list, and
one segment's page to change it or (admins, after a confirmation) delete it.

The builder turns up to `ROWS` condition rows, combined with AND or OR, into the segments API's
expression; the advanced box takes an expression as JSON instead. A saved expression is shown in the
rows when they can hold it, else in the advanced box. Counting, saving, changing and deleting are the
API's handlers (`preview`, `create_segment`, `update_segment`, `delete_segment`), which validate the
expression and name what is wrong; a segment a live campaign or a journey uses is not deleted.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from aiohttp import web

from models.staff import StaffRole
from webhooks import admin_segments, admin_tags
from webhooks.console.base import (
    EditPage,
    FormErrors,
    api,
    fen_to_yuan,
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


def _shown(kind: str, value: Any) -> str:
    if kind == "flag":
        return "是" if value else "否"
    if isinstance(value, list):
        return "，".join(_shown(kind, v) for v in value)
    return fen_to_yuan(value).replace(",", "") if kind == "yuan" else str(value)


def _row(term: dict[str, Any]) -> tuple[str, str, str] | None:
    """A term as one builder row (field, op, typed value), or None when no row can hold it."""
    if set(term) == {"tag"}:
        return f"tag:{term['tag']}", "has", ""
    inner = term.get("not")
    if set(term) == {"not"} and isinstance(inner, dict) and set(inner) == {"tag"}:
        return f"tag:{inner['tag']}", "not", ""
    offered = ATTRIBUTES.get(term.get("attr", ""))
    if offered is None or term.get("op") not in dict(offered[1]):
        return None
    return term["attr"], term["op"], _shown(offered[2], term.get("value"))


def builder_values(saved: dict[str, Any]) -> dict[str, str]:
    """The builder's form for a saved expression: its rows when an AND or OR of at most `ROWS` terms
    each fits a row and the rows read back as the same expression, else the expression as JSON in the
    advanced box (saving the form unchanged never changes the expression)."""
    as_json = {"mode": "and", "advanced": json.dumps(saved, ensure_ascii=False, indent=2)}
    ((mode, terms),) = saved.items() if len(saved) == 1 else (("", None),)
    listed = terms if mode in ("and", "or") and isinstance(terms, list) else [None]
    rows = [_row(t) if isinstance(t, dict) else None for t in listed]
    if not 1 <= len(rows) <= ROWS or None in rows:
        return as_json
    values = {"mode": mode, "advanced": ""}
    for i, row in enumerate(rows):
        assert row is not None
        values.update({f"c{i}_field": row[0], f"c{i}_op": row[1], f"c{i}_value": row[2]})
    return values if expression(values) == saved else as_json


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
        "deleted": request.query.get("deleted"),
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


def _segment_path(request: web.Request) -> admin_segments.SegmentPath:
    return parse(admin_segments.SegmentPath, {"segment_id": request.match_info["segment_id"]})


async def _load_segment(request: web.Request, console: Console) -> Any:
    return await api(request, console, admin_segments.get_segment, path=_segment_path(request))


SEGMENT_PAGE: EditPage[admin_segments.SegmentOut] = EditPage(
    "segment_edit.html",
    "segments",
    "s",
    load=_load_segment,
    values_of=lambda segment, _: {"name": segment.name, **builder_values(segment.expression)},
    extra={"attributes": ATTRIBUTES, "rows": range(ROWS)},
)


async def _segment_page(
    request: web.Request,
    console: Console,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    tags = await api(request, console, admin_tags.list_tags)
    shown = dataclasses.replace(SEGMENT_PAGE, extra={**SEGMENT_PAGE.extra, "tags": tags.items})
    return await shown.show(request, console, errors=errors, values=values, status=status)


@routes.get(r"/admin/segments/{segment_id:\d+}")
@page()
async def segment_page(request: web.Request, console: Console) -> web.StreamResponse:
    """The segment's builder, filled with its name and conditions, and its audience counted live."""
    return await _segment_page(request, console)


@routes.post(r"/admin/segments/{segment_id:\d+}")
@page()
async def update(request: web.Request, console: Console) -> web.StreamResponse:
    """Rename the segment or change its conditions (the API validates the expression again)."""
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        raw = {"name": data.get("name", "").strip(), "expression": expression(data)}
        body = parse(admin_segments.SegmentPatch, raw)
        changed = await api(
            request, console, admin_segments.update_segment, body=body, path=_segment_path(request)
        )
        return redirect(request, f"/admin/segments?saved={changed.id}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _segment_page(request, console, errors=_errors(errors), values=data, status=400)

    return await submit(attempt, refused, passes=(403, 404))


@routes.post(r"/admin/segments/{segment_id:\d+}/delete")
@page(StaffRole.ADMIN)
async def delete(request: web.Request, console: Console) -> web.StreamResponse:
    """Delete the segment (its synced WeChat tag in the background); refused while a campaign not yet
    done or a journey uses it, with what uses it named."""

    async def attempt() -> web.StreamResponse:
        await api(request, console, admin_segments.delete_segment, path=_segment_path(request))
        return redirect(request, "/admin/segments?deleted=1")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        shown = {"delete": next(iter(errors.values()))}
        return await _segment_page(request, console, errors=shown, status=400)

    return await submit(attempt, refused, passes=(403, 404))


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
        "saved": request.query.get("saved"),
        "deleted": request.query.get("deleted"),
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
