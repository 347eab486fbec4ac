"""The campaign API over HTTP: a manager prepares, only an admin sends; validation errors name the field;
live counts, the report (with the holdout's conversion) and the CSV; every change audited."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest

from models.campaign import CampaignRecipient, RecipientStatus
from models.loyalty import AuditLog
from models.purchase import Purchase
from tests.support.factories import staff_headers
from tests.support.wechat_sim import WeChatSim
from tests.test_campaigns import FIELDS, TEMPLATE, drive, granted, shop

BODY = {
    "name": "双十二会员日",
    "channel": "subscribe",
    "template_id": TEMPLATE,
    "content": {"fields": FIELDS, "page": "pages/index/index"},
    "holdout_pct": 30,
    "throttle_per_second": 500,
}


@pytest.fixture
async def started(aiohttp_client: Any, make_app: Any, wechat_sim: WeChatSim) -> Any:
    return await aiohttp_client(make_app(wechat_api_base=wechat_sim.url))


async def test_a_manager_prepares_an_admin_sends_and_reads_the_report(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim)
    members = await granted(merchant, wechat_sim, 20)
    manager = await staff_headers(started, merchant, "manager")
    admin = await staff_headers(started, merchant, "admin")
    created = await started.post("/api/admin/campaigns", json=BODY, headers=manager)
    assert created.status == 201, await created.text()
    campaign = await created.json()
    assert (campaign["state"], campaign["validated_at"]) == ("draft", None)
    url = f"/api/admin/campaigns/{campaign['id']}"
    refused = await started.post(f"{url}/schedule", headers=admin)
    assert refused.status == 409 and (await refused.json())["error"]["field"] == "validated_at"
    validated = await started.post(f"{url}/validate", headers=manager)
    assert validated.status == 200
    preview = await validated.json()
    assert preview["audience"] == 20 and preview["fields"]["thing2"] == "shop 门店"
    assert (await started.post(f"{url}/schedule", headers=manager)).status == 403  # sending: admins only
    scheduled = await started.post(f"{url}/schedule", headers=admin)
    assert scheduled.status == 200 and (await scheduled.json())["state"] == "sending"
    await drive(started, campaign["id"])
    shown = await (await started.get(url, headers=manager)).json()
    assert shown["state"] == "done"
    assert shown["counts"]["sent"] + shown["counts"]["holdout"] == 20 and shown["counts"]["holdout"] > 0
    # Two messaged members and one held-out member buy within the window.
    rows = {r.member_id: r for r in await CampaignRecipient.filter(campaign_id=campaign["id"])}
    sent = [m for m in members if rows[m.id].status == RecipientStatus.SENT][:2]
    held = [m for m in members if rows[m.id].status == RecipientStatus.HOLDOUT][:1]
    for n, member in enumerate([*sent, *held]):
        await Purchase.create(
            merchant_id=merchant.id,
            member_id=member.id,
            idempotency_key=f"p{n}",
            request_digest="d",
            amount_fen=10_000,
            paid_fen=10_000,
            status="completed",
            created_at=datetime.now(UTC),
        )
    found = await (await started.get(f"{url}/report", headers=manager)).json()
    assert found["messaged"]["converted"] == 2 and found["holdout"]["converted"] == 1
    assert found["messaged"]["revenue_fen"] == 20_000
    assert found["uplift_low"] <= found["uplift"] <= found["uplift_high"]
    exported = await started.get(f"{url}/recipients.csv", headers=manager)
    assert exported.status == 200 and exported.headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO((await exported.read()).decode("utf-8-sig"))))
    assert len(table) == 20 and {r["status"] for r in table} == {"sent", "holdout"}
    actions = {a.action for a in await AuditLog.filter(merchant_id=merchant.id)}
    assert {"campaign.create", "campaign.validate", "campaign.schedule"} <= actions


async def test_bad_content_is_refused_naming_the_field(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    manager = await staff_headers(started, merchant, "manager")
    cases = [
        ({**BODY, "channel": "template"}, "channel"),
        ({**BODY, "content": {"fields": {"thing1": "{{ nobody }}"}}}, "content.fields.thing1"),
        (
            {**BODY, "content": {"fields": {"thing1": "{{ member_name }}" + "长" * 30}}},
            "content.fields.thing1",
        ),
        ({**BODY, "channel": "sms", "template_id": "abc", "content": {"params": ["x"]}}, "template_id"),
        ({**BODY, "channel": "custom", "template_id": "", "content": {"text": ""}}, "content.text"),
    ]
    for body, field in cases:
        response = await started.post("/api/admin/campaigns", json=body, headers=manager)
        if response.status == 201:  # the shape was fine: rendering for a member finds it
            campaign = await response.json()
            response = await started.post(f"/api/admin/campaigns/{campaign['id']}/validate", headers=manager)
        assert response.status == 400, (field, await response.text())
        assert (await response.json())["error"]["field"] == field


async def test_test_send_pause_resume_cancel_and_caps(started: Any, wechat_sim: WeChatSim) -> None:
    merchant = await shop(wechat_sim)
    await granted(merchant, wechat_sim, 3)
    admin = await staff_headers(started, merchant, "admin")
    campaign = await (await started.post("/api/admin/campaigns", json=BODY, headers=admin)).json()
    url = f"/api/admin/campaigns/{campaign['id']}"
    wechat_sim.add_follower(merchant.mp_appid, "mp-staff")
    wechat_sim.grant(merchant.mp_appid, "mp-staff", TEMPLATE)
    tried = await started.post(f"{url}/test-send", json={"to": "mp-staff"}, headers=admin)
    assert tried.status == 200, await tried.text()
    assert [r["body"]["touser"] for r in wechat_sim.records("cgi-bin/message/subscribe/send")] == ["mp-staff"]
    assert (await started.post(f"{url}/pause", headers=admin)).status == 409  # not sending
    await started.post(f"{url}/validate", headers=admin)
    await started.post(f"{url}/schedule", json={"at": "2099-01-01T09:00:00+08:00"}, headers=admin)
    shown = await (await started.get(url, headers=admin)).json()
    assert shown["state"] == "scheduled" and shown["scheduled_at"].startswith("2099-01-01T01:00:00")
    cancelled = await started.post(f"{url}/cancel", headers=admin)
    assert (await cancelled.json())["state"] == "cancelled"
    caps = await started.put(
        "/api/admin/marketing-caps", json={"marketing_per_day": 2, "sms_per_day": 1}, headers=admin
    )
    assert (await caps.json()) == {"marketing_per_day": 2, "sms_per_day": 1}
    assert (await (await started.get("/api/admin/marketing-caps", headers=admin)).json())[
        "marketing_per_day"
    ] == 2
    journey = await started.post(
        "/api/admin/journeys",
        json={"name": "首单后 7 天", "trigger": "days_after_first_purchase", "days": 7, "message": BODY},
        headers=admin,
    )
    assert journey.status == 201, await journey.text()
    made = await journey.json()
    activated = await started.post(f"/api/admin/journeys/{made['id']}/activate", headers=admin)
    assert (await activated.json())["active"] is True
    listed = await (await started.get("/api/admin/journeys", headers=admin)).json()
    assert [j["campaign"]["state"] for j in listed["items"]] == ["sending"]
    # A journey's message is not a campaign of its own in the campaign list.
    assert [
        c["id"] for c in (await (await started.get("/api/admin/campaigns", headers=admin)).json())["items"]
    ] == [campaign["id"]]
