"""Notices sent many at a time: a batch costs the database the same few statements however many notices
it carries, and each notice in it ends as it would alone (sent, fallen back to the next channel, left
for a retry, skipped), with its task's outcome recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from handlers import effects
from handlers.core import queries
from handlers.notices import reach
from handlers.notices import settings as notice_settings
from handlers.notices.catalog import KINDS
from handlers.notices.delivery import NOTICE_SEND, queue_notice
from handlers.notices.sending import SEND_BATCH
from models.member import Member
from models.merchant import Merchant
from models.notice import DeliveryStatus, NoticeDelivery
from models.task import Task, TaskStatus
from tests.support.factories import make_member, make_merchant
from tests.support.wechat_sim import WeChatSim
from webhooks.appkeys import EFFECTS, REDIS

TEMPLATE_SEND, CUSTOM_SEND = "cgi-bin/message/template/send", "cgi-bin/message/custom/send"
FIELDS = {"amount1": "{{ paid }}元", "thing2": "{{ merchant_name }}", "number3": "{{ points }}"}


@pytest.fixture
async def started(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> Any:
    return await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))


async def shop(wechat_sim: WeChatSim) -> Merchant:
    merchant = await make_merchant("shop")
    wechat_sim.add_app(merchant.oa_appid, merchant.oa_secret)
    wechat_sim.add_template(merchant.oa_appid, "TPL-RECEIPT", tuple(FIELDS))
    receipt = {"template_id": "TPL-RECEIPT", "template_fields": FIELDS, "channels": ["template", "custom"]}
    await notice_settings.save(merchant, "purchase_receipt", receipt, actor="test")
    await Merchant.filter(id=merchant.id).update(quiet_start_minute=0, quiet_end_minute=0)
    return await Merchant.get(id=merchant.id)


async def receipts(merchant: Merchant, members: list[Member]) -> list[int]:
    """One queued receipt to each member (nothing dispatched); their task ids, in member order."""
    registry = effects.build()
    context = KINDS["purchase_receipt"].sample
    async with in_transaction():
        for member in members:
            await queue_notice(
                registry,
                "purchase_receipt",
                merchant_id=merchant.id,
                member_id=member.id,
                event_key=f"batch:{member.id}",
                context=context,
            )
    return list(await Task.filter(kind=NOTICE_SEND).order_by("id").values_list("id", flat=True))


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SQL statements the hand-written queries send, in order."""
    sent: list[str] = []
    real = queries.fetch_rows

    async def counting(sql: str, **params: Any) -> list[dict[str, Any]]:
        sent.append(sql)
        return await real(sql, **params)

    monkeypatch.setattr(queries, "fetch_rows", counting)
    yield sent


async def test_a_batch_costs_five_statements_however_many_notices_it_carries(
    started: Any, wechat_sim: WeChatSim, statements: list[str]
) -> None:
    merchant = await shop(wechat_sim)
    members = []
    for n in range(SEND_BATCH):
        wechat_sim.add_follower(merchant.oa_appid, f"o-{n}")
        members.append(await make_member(merchant, openid=f"o-{n}"))
    tasks = await receipts(merchant, members)
    registry = started.app[EFFECTS]
    now = datetime.now(UTC)
    statements.clear()
    claimed = await registry.claim(tasks, now)
    assert await registry.run_claimed(NOTICE_SEND, claimed[NOTICE_SEND], now) == {
        "done": SEND_BATCH,
        "failed": 0,
        "deferred": 0,
    }
    # Claim the tasks, load the records, mark them sending, mark them sent, record the tasks.
    assert len(statements) == 5, statements
    assert await NoticeDelivery.filter(status=DeliveryStatus.SENT).count() == SEND_BATCH
    assert await Task.filter(kind=NOTICE_SEND, status=TaskStatus.DONE).count() == SEND_BATCH
    sent = [r["body"]["touser"] for r in wechat_sim.records(TEMPLATE_SEND) if r["errcode"] == 0]
    assert sorted(sent) == sorted(f"o-{n}" for n in range(SEND_BATCH))
    statements.clear()
    again = await registry.claim(tasks, now)  # done: nothing to claim, nothing sent again
    assert again == {} and len(statements) == 1
    assert len(wechat_sim.records(TEMPLATE_SEND)) == SEND_BATCH


async def test_each_notice_of_a_batch_ends_as_it_would_alone(started: Any, wechat_sim: WeChatSim) -> None:
    """In one batch, WeChat refusing the template (40037) for both receipts it carries: one falls back to
    a customer-service message WeChat is too busy for (45009: retried after a backoff), one has no
    channel left (failed with the errcode); a third reaches no channel at all (skipped). The retry,
    refused the template again, is carried by the customer-service message, once."""
    merchant = await shop(wechat_sim)
    for openid in ("o-a", "o-b"):
        wechat_sim.add_follower(merchant.oa_appid, openid)
    wechat_sim.interact(merchant.oa_appid, "o-a")
    await reach.window_opened(started.app[REDIS], merchant.id, "o-a", datetime.now(UTC))
    members = [await make_member(merchant, openid=o) for o in ("o-a", "o-b", "o-c")]
    await Member.filter(id=members[2].id).update(subscribed=False)
    tasks = await receipts(merchant, members)
    wechat_sim.inject_error(TEMPLATE_SEND, 40037, "invalid template_id", times=2)
    wechat_sim.inject_error(CUSTOM_SEND, 45009, "reach max api daily quota limit", times=1)
    registry = started.app[EFFECTS]
    now = datetime.now(UTC)
    claimed = await registry.claim(tasks, now)
    counts = await registry.run_claimed(NOTICE_SEND, claimed[NOTICE_SEND], now)
    assert counts == {"done": 2, "failed": 1, "deferred": 0}
    records = {d.member_id: d for d in await NoticeDelivery.all()}
    busy, left, gone = (records[m.id] for m in members)
    assert (busy.status, busy.channel, busy.reason) == (DeliveryStatus.QUEUED, "custom", "template:40037")
    assert (left.status, left.errcode) == (DeliveryStatus.FAILED, 40037)
    assert left.reason == "template:40037;custom:outside_48h_window"
    assert (gone.status, gone.reason) == (
        DeliveryStatus.SKIPPED,
        "template:not_following;custom:not_following",
    )
    task = await Task.get(key=f"notice:{busy.id}")
    assert (task.status, task.attempts) == (TaskStatus.PENDING, 1) and task.run_after > now
    assert "45009" in task.last_error
    assert await Task.filter(kind=NOTICE_SEND, status=TaskStatus.DONE).count() == 2
    wechat_sim.inject_error(TEMPLATE_SEND, 40037, "invalid template_id", times=1)
    await registry.run_due(now + timedelta(minutes=5))  # its backoff has passed
    busy = await NoticeDelivery.get(id=busy.id)
    assert (busy.status, busy.channel, busy.reason, busy.errcode) == (
        DeliveryStatus.SENT,
        "custom",
        "template:40037",
        40037,
    )
    customs = [(r["body"]["touser"], r["errcode"]) for r in wechat_sim.records(CUSTOM_SEND)]
    assert customs == [("o-a", 45009), ("o-a", 0)]
    assert all(r["errcode"] == 40037 for r in wechat_sim.records(TEMPLATE_SEND))


def test_template_fields_render_as_jinja_renders_each_alone() -> None:
    """A kind's fields render as one template (text and names without jinja; anything else with it),
    and say exactly what each field rendered alone says."""
    fields = {
        "thing1": "{{ reason }}",
        "number2": "{{ points }}",
        "thing3": "{% if balance %}余 {{ balance }}{% endif %}",
        "amount4": "{{ paid | default('0') }}元",
    }
    for kind in KINDS.values():
        for mapping in (kind.fields, fields):
            context = {"reason": "活动补发 " * 5, "points": 30, "balance": 0, **kind.sample}
            together = notice_settings.render_fields(dict(mapping), context)
            alone = {
                k: notice_settings.template_value(notice_settings.render(v, context))
                for k, v in mapping.items()
            }
            assert together == alone and list(together) == sorted(mapping, key=lambda k: int(k[-1]))
    with pytest.raises(Exception, match="undefined"):
        notice_settings.render_fields({"thing1": "{{ nowhere }}"}, {})
