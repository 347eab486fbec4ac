"""Deleting a journey: only once it is switched off; its message's campaign is cancelled and kept with
its records (a member due but not yet claimed is skipped, never messaged), and the segment it
triggered on is free again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from handlers.campaigns import journeys, manage
from models.campaign import Campaign, CampaignRecipient, CampaignState, Journey, RecipientStatus
from models.loyalty import AuditLog
from models.member import Gender, Member
from tests.support.factories import staff_headers
from tests.support.wechat_sim import WeChatSim
from tests.test_campaigns import ACTOR, drive, granted, shop
from tests.test_journey_edit import sent_texts, started, tick, women_journey

__all__ = ["started"]  # the fixture, shared with the edit tests


async def test_a_journey_is_deleted_only_when_off_and_its_due_members_are_never_messaged(
    started: Any, wechat_sim: WeChatSim
) -> None:
    merchant = await shop(wechat_sim)
    await manage.set_caps(merchant, marketing_per_day=5, sms_per_day=1, actor=ACTOR)
    first, second = await granted(merchant, wechat_sim, 2)
    women, journey = await women_journey(merchant)
    await journeys.set_active(merchant, journey.id, True, actor=ACTOR, now=datetime.now(UTC))
    await Member.filter(id=first.id).update(gender=Gender.FEMALE)
    assert await tick(started, journey.campaign_id) == 1
    admin = await staff_headers(started, merchant, "admin")
    manager = await staff_headers(started, merchant, "manager")
    url = f"/api/admin/journeys/{journey.id}"

    # On: refused, nothing changes; the segment is still the journey's.
    refused = await started.delete(url, headers=admin)
    assert refused.status == 409, await refused.text()
    assert (await refused.json())["error"]["field"] == "active"
    assert (await started.delete(url, headers=manager)).status == 403
    in_use = await started.delete(f"/api/admin/segments/{women.id}", headers=admin)
    assert in_use.status == 409 and "欢迎加入" in (await in_use.json())["error"]["message"]
    assert (await Campaign.get(id=journey.campaign_id)).state == CampaignState.SENDING

    # Off, with a member fallen due whose send has not run yet (a tick just before the switch).
    assert (await started.post(f"{url}/deactivate", headers=admin)).status == 200
    await Member.filter(id=second.id).update(gender=Gender.FEMALE)
    await CampaignRecipient.create(
        campaign_id=journey.campaign_id,
        merchant_id=merchant.id,
        member_id=second.id,
        channel="subscribe",
        status=RecipientStatus.PENDING,
        reason="",
    )
    deleted = await started.delete(url, headers=admin)
    assert deleted.status in (200, 204), await deleted.text()

    assert (await started.get(url, headers=admin)).status == 404
    assert (await started.delete(url, headers=admin)).status == 404
    listed = await (await started.get("/api/admin/journeys", headers=admin)).json()
    assert listed["items"] == []
    assert not await Journey.filter(id=journey.id).exists()
    campaign = await drive(started, journey.campaign_id)
    assert campaign.state == CampaignState.CANCELLED and campaign.finished_at is not None
    rows = {r.member_id: r for r in await CampaignRecipient.filter(campaign_id=journey.campaign_id)}
    assert rows[first.id].status == RecipientStatus.SENT  # kept: it still counts against the caps
    assert (rows[second.id].status, rows[second.id].reason) == (RecipientStatus.SKIPPED, "cancelled")
    assert sent_texts(wechat_sim) == [("mp-m0", "会员0，会员日到啦")]
    entry = await AuditLog.get(action="journey.delete")
    assert (entry.subject, entry.detail["campaign"], entry.detail["name"]) == (
        str(journey.id),
        str(journey.campaign_id),
        "欢迎加入",
    )
    assert await tick(started, journey.campaign_id) == 0
    freed = await started.delete(f"/api/admin/segments/{women.id}", headers=admin)
    assert freed.status in (200, 204), await freed.text()
