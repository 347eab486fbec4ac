"""Console pages of the members: search and CSV export, one member's page, manual points grants and
deductions, block and unblock, staff notes, voiding a coupon or a service card (stored-value actions:
`member_wallet`).

Each page calls the JSON admin API's own handler (`webhooks.console.base.api`) with the request model
the API validates, so a form is accepted or refused exactly as the API would, with the field named.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode

import pydantic
from aiohttp import web

from handlers.core.errors import DomainError, ErrorCode, NotFound
from handlers.directory import search
from handlers.members import lookup as members_lookup
from models.staff import StaffRole
from webhooks import (
    admin_loyalty,
    admin_member_page,
    admin_members,
    admin_tags,
    coupons,
    credit,
    member_import,
    mp,
    service_cards,
)
from webhooks.api import ApiError
from webhooks.console.base import (
    FormErrors,
    api,
    form,
    page,
    parse,
    present,
    redirect,
    render,
    submit,
    yuan_to_fen,
)
from webhooks.console.security import Console
from webhooks.forms import parse_form

routes = web.RouteTableDef()
FILTERS = (
    "code",
    "external_id",
    "phone",
    "name",
    "name_contains",
    "tier",
    "tag_id",
    "blocked",
    "sort",
    "order",
)
SOURCES = {
    "oa_subscribe": "关注公众号",
    "oa_referral": "会员推荐",
    "oa_staff": "员工推荐",
    "mini_program": "小程序",
    "staff": "员工登记",
    "import": "导入",
}
DONE = {
    "grant": "积分已调整。",
    "block": "会员已冻结。",
    "unblock": "会员已解冻。",
    "note": "备注已添加。",
    "credit": "信用额度已更新。",
    "tag": "标签已更新。",
    "profile": "资料已修改。",
    "card": "服务卡已作废，不能再使用。",
    "coupon": "优惠券已作废。",
    "wallet": "储值已调整。",
    "withdraw": "本金已退还。",
}


def _filters(request: web.Request) -> dict[str, str]:
    return present(request.query, *FILTERS)


@routes.get("/admin/members")
@page()
async def member_list(request: web.Request, console: Console) -> web.StreamResponse:
    """Search the members (the API's filters and sort), one keyset page at a time."""
    values = _filters(request)
    errors: dict[str, str] = {}
    result = None
    try:
        query = parse(admin_members.SearchQuery, {**values, **present(request.query, "cursor")})
        result = await api(request, console, admin_members.list_members, query=query)
    except FormErrors as exc:
        errors = exc.errors
    except (DomainError, ApiError) as exc:
        errors = FormErrors.of(exc).errors
    tags = await api(request, console, admin_tags.list_tags)
    context = {
        "values": values,
        "errors": errors,
        "result": result,
        "tags": tags.items,
        "next_url": f"/admin/members?{urlencode({**values, 'cursor': result.next_cursor})}"
        if result is not None and result.next_cursor
        else None,
        "export_url": f"/admin/members/export.csv?{urlencode(values)}",
        "sorts": {
            "registered_at": "注册时间",
            "last_visit": "最近到店",
            "points": "积分",
            "lifetime_spend": "累计消费",
        },
        "max_page": search.MAX_PAGE,
    }
    status = 400 if errors else 200
    return render(request, "members.html", console, context, status=status, section="members")


@routes.get("/admin/members/export.csv")
@page()
async def member_export(request: web.Request, console: Console) -> web.StreamResponse:
    """The search's members as CSV (UTF-8 with BOM, phones masked), streamed by the API's export."""
    query = parse(admin_members.ExportQuery, {**_filters(request), "format": "csv"})
    response: web.StreamResponse = await api(request, console, admin_members.export_members, query=query)
    return response


async def _member_page(
    request: web.Request,
    console: Console,
    member_id: int,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    path = parse(admin_members.MemberPath, {"member_id": member_id})
    found = await api(request, console, admin_member_page.member_page, path=path)
    held = await api(
        request, console, admin_tags.member_tags, path=path, query=admin_tags.HistoryQuery(limit=10)
    )
    tags = await api(request, console, admin_tags.list_tags)
    context: dict[str, Any] = {
        "m": found,
        "held": held,
        "manual_tags": [
            t for t in tags.items if t.kind == "manual" and t.id not in {h.tag_id for h in held.tags}
        ],
        "errors": errors or {},
        "values": values or {},
        "grant_key": secrets.token_hex(12),
        "credit_key": secrets.token_hex(12),
        "wallet_key": secrets.token_hex(12),
        "withdraw_key": secrets.token_hex(12),
        "done": DONE.get(request.query.get("done", "")),
        "sources": SOURCES,
    }
    return render(request, "member.html", console, context, status=status, section="members")


def _member_id(request: web.Request) -> int:
    raw = request.match_info["member_id"]
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        raise ApiError(404, ErrorCode.NOT_FOUND, "会员不存在")
    return int(raw)


@routes.get(r"/admin/members/{member_id:\d+}")
@page()
async def member_detail(request: web.Request, console: Console) -> web.StreamResponse:
    """One member: profile, tier, points and lots, stored value, coupons, cards, orders, purchases,
    referrals, notices and notes (the API's member page), with the actions below."""
    return await _member_page(request, console, _member_id(request))


async def act(
    request: web.Request,
    console: Console,
    action: str,
    run: Any,
) -> web.StreamResponse:
    """Run one of the member page's forms; a refusal shows the page again with the error next to the
    field (`action.field`) and what was typed kept."""
    member_id = _member_id(request)
    data = await form(request)

    async def attempt() -> web.StreamResponse:
        await run(member_id, data)
        return redirect(request, f"/admin/members/{member_id}?done={action}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        return await _member_page(request, console, member_id, errors=errors, values=data, status=400)

    return await submit(attempt, refused, prefix=action, passes=(403, 404))


@routes.post(r"/admin/members/{member_id:\d+}/points")
@page()
async def grant(request: web.Request, console: Console) -> web.StreamResponse:
    """Grant (a positive number) or deduct (a negative one) points with a reason; the form's one-time
    key makes a resubmitted form post once."""

    async def run(member_id: int, data: dict[str, str]) -> None:
        member = await members_lookup.resolve(console.merchant, member_id=member_id)
        body = parse(admin_loyalty.GrantIn, _grant_body(data))
        code = parse(admin_loyalty.MemberPath, {"member_code": member.code})
        await api(request, console, admin_loyalty.grant_points, body=body, path=code)

    return await act(request, console, "grant", run)


def _grant_body(data: dict[str, str]) -> dict[str, Any]:
    raw = data.get("delta", "").strip().replace("+", "")
    delta: Any = int(raw) if raw.lstrip("-").isdigit() else raw
    return {"delta": delta, "reason": data.get("reason", ""), "idempotency_key": data.get("key", "")}


@routes.post(r"/admin/members/{member_id:\d+}/block")
@page()
async def block(request: web.Request, console: Console) -> web.StreamResponse:
    async def run(member_id: int, data: dict[str, str]) -> None:
        body = parse(admin_members.BlockIn, {"reason": data.get("reason", "").strip()})
        path = parse(admin_members.MemberPath, {"member_id": member_id})
        await api(request, console, admin_members.block, body=body, path=path)

    return await act(request, console, "block", run)


@routes.post(r"/admin/members/{member_id:\d+}/unblock")
@page()
async def unblock(request: web.Request, console: Console) -> web.StreamResponse:
    async def run(member_id: int, data: dict[str, str]) -> None:
        path = parse(admin_members.MemberPath, {"member_id": member_id})
        await api(request, console, admin_members.unblock, path=path)

    return await act(request, console, "unblock", run)


@routes.post(r"/admin/members/{member_id:\d+}/notes")
@page()
async def add_note(request: web.Request, console: Console) -> web.StreamResponse:
    async def run(member_id: int, data: dict[str, str]) -> None:
        body = parse(admin_members.NoteIn, {"text": data.get("text", "").strip()})
        path = parse(admin_members.MemberPath, {"member_id": member_id})
        await api(request, console, admin_members.add_note, body=body, path=path)

    return await act(request, console, "note", run)


# Import ------------------------------------------------------------------------------------------


@routes.get("/admin/members/import")
@page(StaffRole.ADMIN)
async def import_form(request: web.Request, console: Console) -> web.StreamResponse:
    """Upload a CSV or XLSX of members; a dry run first reports what a real import would do."""
    return render(request, "member_import.html", console, {"errors": {}, "job": None}, section="members")


@routes.post("/admin/members/import")
@page(StaffRole.ADMIN)
async def import_upload(request: web.Request, console: Console) -> web.StreamResponse:
    """The API's import: the upload is checked and staged, then applied in the background."""
    try:
        upload = await parse_form(request, member_import.ImportForm)
    except DomainError as exc:
        errors = FormErrors.of(exc).errors
        return render(
            request,
            "member_import.html",
            console,
            {"errors": errors, "job": None},
            status=400,
            section="members",
        )
    except pydantic.ValidationError:
        errors = {"file": "请选择要导入的 CSV 或 XLSX 文件"}
        return render(
            request,
            "member_import.html",
            console,
            {"errors": errors, "job": None},
            status=400,
            section="members",
        )

    async def attempt() -> web.StreamResponse:
        job = await api(request, console, member_import.import_members, body=upload)
        return redirect(request, f"/admin/members/imports/{job.id}")

    async def refused(errors: dict[str, str]) -> web.StreamResponse:
        context = {"errors": errors, "job": None}
        return render(request, "member_import.html", console, context, status=400, section="members")

    try:
        return await submit(attempt, refused)
    finally:
        upload.file.close()


def _job_path(request: web.Request) -> member_import.ImportPath:
    raw = request.match_info["job_id"]
    if not raw.isdigit() or not 1 <= int(raw) <= 2**63 - 1:
        raise ApiError(404, ErrorCode.NOT_FOUND, "导入任务不存在")
    return member_import.ImportPath(id=int(raw))


@routes.get(r"/admin/members/imports/{job_id:\d+}")
@page(StaffRole.ADMIN)
async def import_status(request: web.Request, console: Console) -> web.StreamResponse:
    """An import's progress and counts; the page polls (htmx) until it is done, then shows the report's
    refused rows and the link to the whole report."""
    job = await api(request, console, member_import.get_import, path=_job_path(request))
    template = "member_import_job.html" if request.headers.get("HX-Request") else "member_import.html"
    return render(request, template, console, {"errors": {}, "job": job}, section="members")


@routes.get(r"/admin/members/imports/{job_id:\d+}/report.csv")
@page(StaffRole.ADMIN)
async def import_report(request: web.Request, console: Console) -> web.StreamResponse:
    response: web.StreamResponse = await api(
        request, console, member_import.get_import_report, path=_job_path(request)
    )
    return response


@routes.post(r"/admin/members/{member_id:\d+}/credit-limit")
@page()
async def credit_limit(request: web.Request, console: Console) -> web.StreamResponse:
    """Set the member's credit limit (yuan), with a reason; below what the member owes is refused."""

    async def run(member_id: int, data: dict[str, str]) -> None:
        raw = {
            "limit_fen": yuan_to_fen(data.get("limit", "")),
            "reason": data.get("reason", "").strip(),
            "idempotency_key": data.get("key", ""),
        }
        body = parse(credit.CreditLimitIn, raw)
        path = parse(admin_members.MemberPath, {"member_id": member_id})
        await api(request, console, credit.set_limit, body=body, path=path)

    return await act(request, console, "credit", run)


@routes.get("/admin/credit")
@page()
async def credit_overdue(request: web.Request, console: Console) -> web.StreamResponse:
    """信用预警: members whose credit is overdue, oldest due date first (a manager: their store's)."""
    found = await api(request, console, credit.list_overdue, query=credit.OverdueQuery())
    return render(request, "credit.html", console, {"found": found}, section="members")


@routes.get("/admin/credit/overdue.csv")
@page()
async def credit_overdue_csv(request: web.Request, console: Console) -> web.StreamResponse:
    response: web.StreamResponse = await api(
        request, console, credit.overdue_csv, query=credit.OverdueQuery()
    )
    return response


@routes.post(r"/admin/members/{member_id:\d+}/profile")
@page()
async def edit_profile(request: web.Request, console: Console) -> web.StreamResponse:
    """Change name, phone, birthday or gender (empty: unchanged), parsed by the member's own rules."""

    async def run(member_id: int, data: dict[str, str]) -> None:
        body = parse(mp.ProfilePatch, present(data, "name", "phone", "birthday", "gender"))
        path = parse(admin_members.MemberPath, {"member_id": member_id})
        await api(request, console, admin_members.edit_profile, body=body, path=path)

    return await act(request, console, "profile", run)


@routes.post(r"/admin/members/{member_id:\d+}/cards/{card_id:\d+}/revoke")
@page()
async def revoke_card(request: web.Request, console: Console) -> web.StreamResponse:
    """Stop one of the member's service cards, with a reason (the API's revoke: no further uses); a card
    of another member than the page's is not found."""

    async def run(member_id: int, data: dict[str, str]) -> None:
        raw = {"reason": data.get("reason", "").strip(), "member_id": member_id}
        body = parse(service_cards.CardRevokeIn, raw)
        path = parse(service_cards.CardPath, {"card_id": request.match_info["card_id"]})
        try:
            await api(request, console, service_cards.revoke, body=body, path=path)
        except NotFound as exc:  # no such card of this member: the 404 page, as for a coupon
            raise ApiError(404, exc.code, exc.message) from None

    return await act(request, console, "card", run)


@routes.post(r"/admin/members/{member_id:\d+}/coupons/{coupon_id:\d+}/revoke")
@page()
async def revoke_coupon(request: web.Request, console: Console) -> web.StreamResponse:
    """Void one of the member's coupons, with a reason (a used or expired one is refused); a coupon of
    another member than the page's is not found."""

    async def run(member_id: int, data: dict[str, str]) -> None:
        raw = {"reason": data.get("reason", "").strip(), "member_id": member_id}
        body = parse(coupons.RevokeIn, raw)
        path = parse(coupons.CouponPath, {"coupon_id": request.match_info["coupon_id"]})
        await api(request, console, coupons.revoke, body=body, path=path)

    return await act(request, console, "coupon", run)
