"""What members and WeChat tell campaigns afterwards: a member's SMS consent (given in the mini-program,
withdrawn by replying TD) and WeChat's `MASSSENDJOBFINISH` report of a mass send."""

from __future__ import annotations

from datetime import datetime

from tortoise.transactions import in_transaction

from handlers.core import audit_log
from models.campaign import CampaignRecipient, MassJob, RecipientStatus
from models.member import Member


async def set_consent(member: Member, given: bool, *, via: str, now: datetime) -> bool:
    """Record the member's choice; False if it was already so. Audited either way it changes."""
    async with in_transaction():
        changed = await Member.filter(id=member.id, sms_consent=not given).update(sms_consent=given)
        if changed:
            action = "member.sms_consent" if given else "member.sms_unsubscribe"
            await audit_log.record(member.merchant_id, via, action, member.code, at=now.isoformat())
    member.sms_consent = given
    return bool(changed)


async def withdraw(member: Member, *, via: str, now: datetime) -> bool:
    return await set_consent(member, False, via=via, now=now)


async def mass_job_finished(
    merchant_id: int,
    msg_id: str,
    *,
    status: str,
    total: int | None,
    sent: int | None,
    errors: int | None,
    now: datetime,
) -> bool:
    """WeChat's word on a mass send: the job's counts; a job that failed as a whole (status other than
    `send success`) fails its recipients with that status. False for a msg_id memberbot never sent."""
    async with in_transaction():
        jobs = await MassJob.filter(merchant_id=merchant_id, msg_id=msg_id).select_for_update()
        if not jobs:
            return False
        for job in jobs:
            job.status, job.total_count, job.sent_count, job.error_count = status[:64], total, sent, errors
            job.finished_at = now
            await job.save(
                update_fields=["status", "total_count", "sent_count", "error_count", "finished_at"]
            )
        if status != "send success":
            await CampaignRecipient.filter(
                merchant_id=merchant_id, msgid=msg_id, status=RecipientStatus.SENT
            ).update(status=RecipientStatus.FAILED, reason=f"mass:{status}"[:64], updated_at=now)
    return True
