"""Staff notes about a member (联系记录, seed 002): dated, by an author, append-only.

Any staff member may add a note (a cashier talks to members at the till); reading them is part of the
back office (manager and up, `webhooks.admin_members`). A note is never edited or deleted — a
correction is a new note — except that the retention run deletes an erased member's notes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise.transactions import in_transaction

from handlers.core import audit_log
from handlers.core.errors import ValidationError
from handlers.members import lookup as members
from models.member import MemberNote
from models.merchant import Merchant
from models.staff import Staff

MAX_TEXT = 1000
MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class NoteView:
    id: int
    text: str
    author_id: int
    author: str  # the author's username
    created_at: datetime


def _text(raw: str) -> str:
    text = raw.strip()
    if not 1 <= len(text) <= MAX_TEXT:
        raise ValidationError(f"备注内容 text 须为 1–{MAX_TEXT} 个字符", field="text")
    if "\x00" in text:
        raise ValidationError("备注内容 text 不能包含空字符", field="text")
    return text


async def add(merchant: Merchant, member_id: int, author: Staff, text: str) -> NoteView:
    """Append a note by `author` about the member (404 for an unknown or erased member)."""
    text = _text(text)
    async with in_transaction():
        member = await members.resolve(merchant, member_id=member_id)
        note = await MemberNote.create(
            merchant_id=merchant.id, member_id=member.id, author_id=author.id, text=text
        )
        await audit_log.record(
            merchant.id, f"staff:{author.id}", "member.note", f"member:{member.id}", note_id=note.id
        )
    return NoteView(note.id, note.text, author.id, author.username, note.created_at)


async def page(
    merchant_id: int, member_id: int, *, cursor: int | None, limit: int
) -> tuple[list[NoteView], int | None]:
    """The member's notes, newest first: `limit` with an id below `cursor`, and the next cursor."""
    query = MemberNote.filter(merchant_id=merchant_id, member_id=member_id)
    if cursor is not None:
        query = query.filter(id__lt=cursor)
    rows = await query.order_by("-id").limit(limit + 1).prefetch_related("author")
    views = [NoteView(n.id, n.text, n.author_id, n.author.username, n.created_at) for n in rows[:limit]]
    return views, views[-1].id if len(rows) > limit else None
