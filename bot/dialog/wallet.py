"""Chat keyword 余额 (balance): stored value, principal and bonus apart, and the usable service cards."""

from __future__ import annotations

from bot.dialog.router import Router
from bot.dialog.turn import Turn
from handlers.core.chat import ChatReply
from handlers.wallet import ledger as wallet
from handlers.wallet import service_cards
from models.cards import CardKind


async def balance(turn: Turn) -> ChatReply:
    member = await turn.ensure_member()
    found = await wallet.balance(turn.merchant.id, member.id)
    views = await service_cards.member_cards(turn.merchant.id, member.id, turn.now(), active_only=True)
    cards = [
        {
            "name": view.product.name,
            "count": view.card.kind == CardKind.COUNT,
            "uses_left": view.card.uses_left or 0,
            "valid_until": service_cards.local_date(view.card.valid_until, turn.merchant.timezone),
        }
        for view in views
    ]
    return await turn.reply(
        "wallet_balance",
        total=wallet.yuan(found.total_fen),
        principal=wallet.yuan(found.principal_fen),
        bonus=wallet.yuan(found.bonus_fen),
        has_balance=found.total_fen > 0,
        cards=cards,
    )


def add_wallet_intents(router: Router) -> None:
    router.add_intent(
        "balance", balance, keywords=("余额", "balance", "储值", "我的余额"), menu_keys=("MENU_BALANCE",)
    )
