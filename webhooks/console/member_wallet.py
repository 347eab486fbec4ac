"""The member page's stored-value actions: a manual adjustment of principal and/or bonus with a reason
(admins; the wallet API's `adjust`) and paying principal back in cash (managers; `withdraw`).

Each form carries a one-time key generated with the page, sent as the API's idempotency key: a form
submitted twice posts once. The ledger rows appear in the page's 储值明细.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.members import lookup as members_lookup
from webhooks import wallet
from webhooks.console.base import api, page, parse, yuan_to_fen
from webhooks.console.members import act
from webhooks.console.security import Console

routes = web.RouteTableDef()


def signed_fen(raw: str) -> Any:
    """ "-12.5" → -1250, "" → 0; anything else as typed, for the API's model to refuse by name."""
    text = raw.strip()
    if not text:
        return 0
    sign = -1 if text.startswith("-") else 1
    fen = yuan_to_fen(text.removeprefix("-").removeprefix("+"))
    return sign * fen if isinstance(fen, int) else text


async def _code(console: Console, member_id: int) -> str:
    return (await members_lookup.resolve(console.merchant, member_id=member_id)).code


@routes.post(r"/admin/members/{member_id:\d+}/wallet/adjust")
@page()
async def adjust(request: web.Request, console: Console) -> web.StreamResponse:
    """Correct the principal and/or bonus (yuan, negative to deduct) with a reason; never below zero."""

    async def run(member_id: int, data: dict[str, str]) -> None:
        raw = {
            "member_code": await _code(console, member_id),
            "principal_delta": signed_fen(data.get("principal", "")),
            "bonus_delta": signed_fen(data.get("bonus", "")),
            "reason": data.get("reason", "").strip(),
            "idempotency_key": data.get("wallet_key", ""),
        }
        await api(request, console, wallet.adjust, body=parse(wallet.WalletAdjustIn, raw))

    return await act(request, console, "wallet", run)


@routes.post(r"/admin/members/{member_id:\d+}/wallet/withdraw")
@page()
async def withdraw(request: web.Request, console: Console) -> web.StreamResponse:
    """Pay principal back in cash (yuan; empty: all of it), with a reason; bonus is never paid out."""

    async def run(member_id: int, data: dict[str, str]) -> None:
        amount = data.get("amount", "").strip()
        raw = {
            "member_code": await _code(console, member_id),
            "amount_fen": yuan_to_fen(amount) if amount else None,
            "reason": data.get("reason", "").strip(),
            "idempotency_key": data.get("withdraw_key", ""),
        }
        await api(request, console, wallet.withdraw, body=parse(wallet.WalletWithdrawIn, raw))

    return await act(request, console, "withdraw", run)
