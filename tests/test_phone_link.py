"""An imported member (phone, no WeChat identity) linked to the follower who proves that phone by SMS
code in the registration dialog: the rule, the one-time codes, the link keeping points, tier and credit,
the audit row, and races (two followers with the same phone, one follower's duplicate delivery)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.dialog import Dispatcher
from handlers.campaigns.sms import LoggingProvider
from handlers.core.chat import IncomingMessage, TextReply
from handlers.credit import ledger as credit
from handlers.loyalty import ledger
from handlers.members import lookup as members
from handlers.members import phone_link
from handlers.members.phone_link import Outcome, PhoneCodes, SendResult
from models.credit import CreditAccount
from models.loyalty import AuditLog
from models.member import Member, MemberSource
from models.points import PointsAccount, PointsKind
from tests.support.factories import EFFECTS, make_member, make_merchant
from tests.test_credit import buy
from webhooks.appkeys import REDIS, RENDERER, RUNTIME

NOW = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
PHONE = "13912345678"
SECRET = b"k" * 32


async def imported_member(merchant: Any) -> Member:
    return await members.create_member(merchant, phone=PHONE, source=MemberSource.IMPORT, name="王芳")


@pytest.fixture
async def shop(client: Any) -> Any:
    merchant = await make_merchant()
    imported = await imported_member(merchant)
    await ledger.credit(
        merchant.id, imported.id, 800, PointsKind.GRANT, key="opening", now=NOW, expires_at=None
    )
    await credit.set_limit(merchant, imported.id, 50_000, key="l", now=NOW, actor="staff:1")
    return merchant, imported


async def test_the_follower_who_proves_the_phone_becomes_the_imported_member(shop: Any) -> None:
    merchant, imported = shop
    follower = await make_member(merchant, openid="o-new", unionid="u-1")
    assert (await phone_link.candidate(merchant, follower, PHONE)).id == imported.id  # type: ignore[union-attr]
    assert await phone_link.candidate(merchant, follower, "13900000000") is None
    found = await phone_link.link(merchant, follower, imported, PHONE, now=NOW)
    assert found.outcome is Outcome.LINKED and found.member is not None and found.member.id == imported.id
    now_imported = await Member.get(id=imported.id)
    assert (now_imported.openid, now_imported.unionid, now_imported.subscribed) == ("o-new", "u-1", True)
    assert (await PointsAccount.get(member_id=imported.id)).balance == 800  # what it had stays
    assert (await CreditAccount.get(member_id=imported.id)).limit_fen == 50_000
    retired = await Member.get(id=follower.id)
    assert (retired.openid, retired.unionid, retired.subscribed) == (None, None, False)
    assert retired.blocked_at == NOW and retired.blocked_reason == f"已并入会员 {imported.code}"
    log = await AuditLog.get(action="members.linked")
    assert (log.actor, log.subject) == (f"member:{follower.id}", f"member:{imported.id}")
    assert log.detail == {"follower_id": follower.id, "imported_id": imported.id, "phone": "139****5678"}
    assert await phone_link.candidate(merchant, follower, PHONE) is None  # it has an openid now
    late = await make_member(merchant, openid="o-late")
    assert (await phone_link.candidate(merchant, late, PHONE, linked_too=True)).id == imported.id  # type: ignore[union-attr]
    assert (await phone_link.link(merchant, late, imported, PHONE, now=NOW)).outcome is Outcome.TAKEN


async def test_what_is_not_linked(shop: Any) -> None:
    merchant, imported = shop
    buyer = await make_member(merchant, openid="o-buyer")
    await buy((merchant, buyer), "p1", 1_000, member=buyer)
    assert (await phone_link.link(merchant, buyer, imported, PHONE, now=NOW)).outcome is Outcome.NOT_NEW
    other = await make_member(merchant, openid="o-other")
    assert (await phone_link.link(merchant, other, imported, "13900000000", now=NOW)).outcome is Outcome.NONE
    twin = await imported_member(merchant)
    assert await phone_link.candidate(merchant, other, PHONE) is None  # two imported members: ambiguous
    await Member.filter(id=twin.id).delete()
    elsewhere = await make_merchant("other")
    stranger = await make_member(elsewhere, openid="o-other")
    assert await phone_link.candidate(elsewhere, stranger, PHONE) is None  # another merchant's member
    assert (await Member.get(id=imported.id)).openid is None


async def test_two_followers_with_the_same_phone_at_once_link_one(shop: Any) -> None:
    merchant, imported = shop
    followers = [await make_member(merchant, openid=f"o-{n}") for n in range(6)]
    results = await asyncio.gather(
        *(phone_link.link(merchant, f, imported, PHONE, now=NOW) for f in followers)
    )
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["linked"] + ["taken"] * 5
    winner = followers[[r.outcome for r in results].index(Outcome.LINKED)]
    assert (await Member.get(id=imported.id)).openid == winner.openid
    losers = await Member.filter(id__in=[f.id for f in followers if f.id != winner.id]).values_list(
        "openid", "blocked_at"
    )
    assert sorted(losers) == sorted((f.openid, None) for f in followers if f.id != winner.id)
    assert await AuditLog.filter(action="members.linked").count() == 1


async def test_one_followers_duplicate_deliveries_link_once(shop: Any) -> None:
    merchant, imported = shop
    follower = await make_member(merchant, openid="o-dup")
    results = await asyncio.gather(
        *(phone_link.link(merchant, follower, imported, PHONE, now=NOW) for _ in range(5))
    )
    assert {r.outcome for r in results} == {Outcome.LINKED} and {
        r.member.id for r in results if r.member
    } == {imported.id}
    assert await AuditLog.filter(action="members.linked").count() == 1


async def test_codes_are_one_time_limited_in_tries_and_resends(shop: Any, client: Any) -> None:
    merchant, _ = shop
    follower = await make_member(merchant, openid="o-new")
    sms = LoggingProvider()
    codes = PhoneCodes(client.app[REDIS], sms, "TPL-1")
    assert await codes.send(merchant, follower, PHONE, secret=SECRET) is SendResult.SENT
    assert await codes.send(merchant, follower, PHONE, secret=SECRET) is SendResult.TOO_SOON
    someone = await make_member(merchant, openid="o-someone")
    assert await codes.send(merchant, someone, PHONE, secret=SECRET) is SendResult.BUSY
    (phone, template, (code,)), *_ = sms.sent
    assert (phone, template, len(code)) == (PHONE, "TPL-1", 6)
    assert not await codes.check(merchant, follower, "13900000000", code, secret=SECRET)  # another number
    assert await codes.check(merchant, follower, PHONE, f" {code} ", secret=SECRET)
    assert not await codes.check(merchant, follower, PHONE, code, secret=SECRET)  # used up
    await client.app[REDIS].delete(
        f"phone_link:{merchant.id}:{follower.id}:sent", f"phone_link:{merchant.id}:to:{PHONE}"
    )
    await codes.send(merchant, follower, PHONE, secret=SECRET)
    code = sms.sent[-1][2][0]
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(phone_link.MAX_TRIES):
        assert not await codes.check(merchant, follower, PHONE, wrong, secret=SECRET)
    assert not await codes.check(merchant, follower, PHONE, code, secret=SECRET)  # voided after five


def _text(content: str, openid: str) -> IncomingMessage:
    return IncomingMessage(openid=openid, kind="text", created_at=datetime.now(UTC), content=content)


async def test_the_registration_dialog_links_on_the_right_code(shop: Any, client: Any) -> None:
    merchant, imported = shop
    app = client.app
    sms = LoggingProvider()
    dispatcher = Dispatcher(
        redis=app[REDIS],
        renderer=app[RENDERER],
        secret=app[RUNTIME].secret,
        base_url=app[RUNTIME].base_url,
        effects=EFFECTS,
        phone_codes=PhoneCodes(app[REDIS], sms, "TPL-1"),
    )

    async def say(content: str, openid: str) -> str:
        reply = await dispatcher.dispatch(merchant, _text(content, openid))
        assert isinstance(reply, TextReply)
        return reply.text

    assert "手机号" in await say("注册", "o-alice")
    asked = await say(PHONE, "o-alice")
    assert "验证码" in asked and "139****5678" in asked
    await say("注册", "o-bob")
    assert "生日" in await say(PHONE, "o-bob")  # the number had a code a moment ago: no second one
    await app[REDIS].delete(f"phone_link:{merchant.id}:to:{PHONE}")  # a minute later
    assert "取消" in await say("取消", "o-bob")
    await say("注册", "o-bob")
    assert "验证码" in await say(PHONE, "o-bob")
    alice_code, bob_code = sms.sent[0][2][0], sms.sent[1][2][0]
    assert "不正确" in await say("000000" if alice_code != "000000" else "111111", "o-alice")
    answers = await asyncio.gather(say(alice_code, "o-alice"), say(bob_code, "o-bob"))
    linked = [a for a in answers if "已关联您在本店" in a]
    assert len(linked) == 1 and imported.code in linked[0] and "生日" in linked[0]
    assert any("已关联其他微信" in a for a in answers)  # the other goes on as a new member
    owner = await Member.get(id=imported.id)
    assert owner.openid in {"o-alice", "o-bob"}
    other = "o-bob" if owner.openid == "o-alice" else "o-alice"
    assert "资料已完善" in await say("1990-05-20", owner.openid) + await say("女", owner.openid)
    owner = await Member.get(id=imported.id)
    assert owner.profile_completed_at is not None and owner.birthday is not None
    assert (await PointsAccount.get(member_id=imported.id)).balance >= 800
    assert (await Member.get(merchant_id=merchant.id, openid=other)).phone is None  # not saved yet
    assert "资料已完善" in await say("1991-01-01", other) + await say("男", other)
    assert (await Member.get(merchant_id=merchant.id, openid=other)).phone == PHONE  # as before: a new member
