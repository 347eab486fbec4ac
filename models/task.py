"""Durable after-commit work (the outbox): one row per effect, written in the transaction that causes it."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.merchant import Merchant


class TaskStatus(StrEnum):
    PENDING = "pending"  # due at `run_after`
    RUNNING = "running"  # claimed until `lease_until`; a lapsed lease makes it due again
    DONE = "done"
    DEAD = "dead"  # failed `MAX_ATTEMPTS` times: left for an operator (logged as an error)


class Task(Model):
    """`(kind, key)` is unique, so an effect is queued once however often its cause is retried."""

    id = fields.BigIntField(primary_key=True)
    merchant: fields.ForeignKeyNullableRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", null=True, on_delete=fields.RESTRICT
    )
    merchant_id: int | None
    kind = fields.CharField(max_length=48)
    key = fields.CharField(max_length=160)
    payload: dict[str, Any] = fields.JSONField(default=dict)
    status = fields.CharEnumField(TaskStatus, max_length=12, default=TaskStatus.PENDING)
    attempts = fields.IntField(default=0)
    run_after = fields.DatetimeField()
    lease_until = fields.DatetimeField(null=True)
    last_error = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    done_at = fields.DatetimeField(null=True)

    class Meta:
        table = "task"
        unique_together = (("kind", "key"),)
        indexes = (("status", "run_after"),)
