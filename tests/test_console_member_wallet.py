"""The member page's stored-value forms (a manual adjustment, paying principal back) through the wallet
API — once per form however often it is submitted, shown in the ledger — and voiding a coupon or a
service card only of the member whose page it is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.coupons import redeem as coupons
from handlers.coupons.issue import TemplateSpec, create_template
from handlers.rules.coupons import Terms, Validity
from handlers.wallet import service_cards
from models.cards import CardKind, MemberCard
from models.coupon import Coupon, CouponStatus
from models.member import Member
from models.merchant import Merchant
from models.staff import Staff
from models.wallet import WalletAccount, WalletKind, WalletTransaction
from tests.support.console import csrf_of, login, make_staff, page_csrf
from tests.support.factories import make_member, make_merchant


@pytest.fixture
async def shop(client: TestClient) -> tuple[Merchant, Member]:
    merchant = await make_merchant()
    await make_staff(merchant, "alice", "admin", None)
    await make_staff(merchant, "mona", "manager")
    zhang = await make_member(merchant, "o-1", name="张三", phone="13800000001")
    assert (await login(client, "shop", "alice")).status == 303
    return merchant, zhang


async def balance(member: Member) -> tuple[int, int]:
    account = await WalletAccount.get_or_none(member_id=member.id)
    return (account.principal_fen, account.bonus_fen) if account else (0, 0)


def hidden(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


async def adjust_form(client: TestClient, member: Member) -> dict[str, str]:
    html = await (await client.get(f"/admin/members/{member.id}")).text()
    return {"csrf_token": csrf_of(html), "wallet_key": hidden(html, "wallet_key")}


async def test_an_adjustment_is_posted_once_and_shown_in_the_ledger(
    client: TestClient, shop: tuple[Merchant, Member]
) -> None:
    _, zhang = shop
    action = f"/admin/members/{zhang.id}/wallet/adjust"
    form = await adjust_form(client, zhang) | {"principal": "100", "bonus": "+12.5", "reason": "补录充值"}
    first = await client.post(action, data=form, allow_redirects=False)
    assert first.status == 303 and first.headers["Location"] == f"/admin/members/{zhang.id}?done=wallet"
    again = await client.post(action, data=form, allow_redirects=False)  # the same form, submitted twice
    assert again.status == 303
    assert await balance(zhang) == (10_000, 1_250)
    assert await WalletTransaction.filter(member_id=zhang.id, kind=WalletKind.ADJUST).count() == 1
    html = await (await client.get(first.headers["Location"])).text()
    assert "储值已调整" in html and "<td>补录充值</td>" in html and "<td>100.00</td><td>12.50</td>" in html
    assert hidden(html, "wallet_key") != form["wallet_key"]  # the next form posts anew
    deduct = await adjust_form(client, zhang) | {"principal": "-30", "bonus": "", "reason": "扣错"}
    assert (await client.post(action, data=deduct, allow_redirects=False)).status == 303
    assert await balance(zhang) == (7_000, 1_250)


async def test_a_refused_adjustment_shows_the_message_and_changes_nothing(
    client: TestClient, shop: tuple[Merchant, Member]
) -> None:
    _, zhang = shop
    action = f"/admin/members/{zhang.id}/wallet/adjust"
    form = await adjust_form(client, zhang)
    below = await client.post(action, data=form | {"principal": "-5", "reason": "扣减"})
    assert below.status == 400
    html = await below.text()
    assert 'data-field="wallet.principal_delta"' in html and "调整后余额不能为负" in html
    assert 'name="principal" value="-5"' in html and 'name="reason" value="扣减"' in html
    assert hidden(html, "wallet_key") == form["wallet_key"]
    nothing = await client.post(action, data=form | {"principal": "", "bonus": "", "reason": "无"})
    assert nothing.status == 400 and 'data-field="wallet.principal_delta"' in await nothing.text()
    typo = await client.post(action, data=form | {"principal": "1O0", "reason": "补录"})
    assert typo.status == 400 and 'data-field="wallet.principal_delta"' in await typo.text()
    no_reason = await client.post(action, data=form | {"principal": "5", "reason": " "})
    assert no_reason.status == 400 and 'data-field="wallet.reason"' in await no_reason.text()
    assert await balance(zhang) == (0, 0)
    assert not await WalletTransaction.filter(member_id=zhang.id).exists()


async def test_principal_is_paid_back_once_and_bonus_never(
    client: TestClient, shop: tuple[Merchant, Member]
) -> None:
    _, zhang = shop
    seed = await adjust_form(client, zhang) | {"principal": "80", "bonus": "20", "reason": "期初"}
    assert (await client.post(f"/admin/members/{zhang.id}/wallet/adjust", data=seed)).status == 200
    await client.post("/admin/logout", data={"csrf_token": await page_csrf(client)})
    assert (await login(client, "shop", "mona")).status == 303
    html = await (await client.get(f"/admin/members/{zhang.id}")).text()
    assert 'id="wallet-adjust"' not in html and 'id="wallet-withdraw"' in html  # adjusting is the admin's
    form = {"csrf_token": csrf_of(html), "withdraw_key": hidden(html, "withdraw_key"), "reason": "退卡"}
    action = f"/admin/members/{zhang.id}/wallet/withdraw"
    too_much = await client.post(action, data=form | {"amount": "90"})
    assert too_much.status == 400
    text = await too_much.text()
    assert 'data-field="withdraw.amount_fen"' in text and "可退 80.00 元" in text and 'value="90"' in text
    for _ in range(2):
        done = await client.post(action, data=form | {"amount": "30"}, allow_redirects=False)
        assert done.status == 303
    assert await balance(zhang) == (5_000, 2_000)
    rest = await (await client.get(f"/admin/members/{zhang.id}")).text()
    assert "<td>-30.00</td><td>0.00</td><td>退卡</td>" in rest
    empty = {"csrf_token": csrf_of(rest), "withdraw_key": hidden(rest, "withdraw_key"), "reason": "销户"}
    assert (await client.post(action, data=empty | {"amount": ""}, allow_redirects=False)).status == 303
    assert await balance(zhang) == (0, 2_000)
    adjust = {"csrf_token": csrf_of(rest), "wallet_key": "k-manager", "principal": "5", "reason": "试"}
    assert (await client.post(f"/admin/members/{zhang.id}/wallet/adjust", data=adjust)).status == 403
    assert await balance(zhang) == (0, 2_000)


# Voiding only the page's member's coupon or card ---------------------------------------------------


@pytest.fixture
async def other(shop: tuple[Merchant, Member]) -> Member:
    return await make_member(shop[0], "o-2", name="李四", phone="13800000002")


async def test_a_coupon_of_another_member_is_not_voided(
    client: TestClient, shop: tuple[Merchant, Member], other: Member
) -> None:
    merchant, zhang = shop
    spec = TemplateSpec(
        "满100减20", Terms("fixed", threshold_fen=10_000, amount_off_fen=2_000), Validity(days=30)
    )
    template = await create_template(merchant, spec, actor="test")
    alice = await Staff.get(username="alice")
    now = datetime.now(UTC)
    lis, _ = await coupons.issue_manually(
        merchant, other.code, template.id, idempotency_key="c1", reason="补偿", staff=alice, now=now
    )
    token = await page_csrf(client, f"/admin/members/{zhang.id}")
    data = {"csrf_token": token, "coupon": str(lis.id), "reason": "作废"}
    wrong = await client.post(f"/admin/members/{zhang.id}/coupons/{lis.id}/revoke", data=data)
    assert wrong.status == 404 and "优惠券不存在" in await wrong.text()
    assert (await Coupon.get(id=lis.id)).status == CouponStatus.ISSUED
    right = await client.post(
        f"/admin/members/{other.id}/coupons/{lis.id}/revoke", data=data, allow_redirects=False
    )
    assert right.status == 303 and (await Coupon.get(id=lis.id)).status == CouponStatus.REVOKED


async def test_a_card_of_another_member_is_not_voided(
    client: TestClient, shop: tuple[Merchant, Member], other: Member
) -> None:
    merchant, zhang = shop
    data_ = service_cards.ProductInput(CardKind.COUNT, "洗剪吹 10 次卡", "洗剪吹", 10, 365, 29_800, True)
    product = await service_cards.create_product(merchant, data_, actor="test")
    issued = await service_cards.issue(
        merchant,
        other,
        product.id,
        source="granted",
        key="g1",
        now=datetime.now(UTC),
        actor="test",
        reason="赠送",
    )
    card: Any = issued.card
    token = await page_csrf(client, f"/admin/members/{zhang.id}")
    data = {"csrf_token": token, "card": str(card.id), "reason": "误售"}
    wrong = await client.post(f"/admin/members/{zhang.id}/cards/{card.id}/revoke", data=data)
    assert wrong.status == 404 and "没有这张服务卡" in await wrong.text()
    assert (await MemberCard.get(id=card.id)).revoked_at is None
    right = await client.post(
        f"/admin/members/{other.id}/cards/{card.id}/revoke", data=data, allow_redirects=False
    )
    assert right.status == 303 and (await MemberCard.get(id=card.id)).revoked_at is not None
