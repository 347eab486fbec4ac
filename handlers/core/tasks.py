"""Durable side effects: work a state change causes, queued in the same transaction, run after commit.

A use case calls `queue(kind, key, payload)` inside its transaction: the `task` row commits with the
change or not at all, and its unique `(kind, key)` queues an effect once however often the cause is
retried. After commit the use case hands the ids to `Effects.after_commit`: kinds marked `inline` run
there and then (their result can shape the response, e.g. a purchase's tier upgrade); the others are
dispatched (an arq job with a `_job_id`, or a wake-up of the embedded runner).

Whatever fails is retried, never lost: a failed run is due again after a backoff (`BACKOFF`), a run
whose process died is due again when its lease lapses, and `run_due` — the worker's cron, or the
embedded scheduler — runs everything due. A task runs at most once at a time (claimed by one atomic
UPDATE), and its handler must be idempotent (ledger keys, unique rows): a crash after the handler's
commit but before `done` runs it again. After `MAX_ATTEMPTS` failures a task is `dead` and logged.

A kind may also have a batch handler (`Effects.batch`, e.g. `notice.send`): tasks of that kind run
together — claimed in one UPDATE, handled in one call, their outcomes recorded in one UPDATE — with the
same lease, backoff and dead-letter rules as one at a time.

`Effects` is built once from one registry (`handlers.effects.build`) by the app, the worker and the
tests alike: there are no hook lists to install.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from handlers.core import queries
from models.task import TaskStatus

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=2)  # a claimed task not finished by then is due again (its process died)
MAX_ATTEMPTS = 12
BACKOFF = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600)  # seconds after the 1st, 2nd, … failure
MAX_ERROR = 2000

Payload = Mapping[str, Any]
Result = dict[str, Any] | None
Handler = Callable[["Effects", Payload, datetime], Awaitable[Result]]
Dispatch = Callable[[Sequence[int]], Awaitable[None]]
# Each claimed task's outcome by task id: its result (done), or the exception it ended with
# (`Deferred`: due again then; any other: failed, retried after a backoff).
Outcomes = Mapping[int, Result | Exception]
BatchHandler = Callable[["Effects", Sequence["Claimed"], datetime], Awaitable[Outcomes]]
RUN_DUE_CHUNK = 100  # tasks of a batch kind `run_due` claims and hands to their handler at once


class Deferred(Exception):
    """Raised by a handler that cannot act before `until` (e.g. quiet hours): the task is due again
    then, and the wait does not count as a failed attempt."""

    def __init__(self, until: datetime) -> None:
        super().__init__(until.isoformat())
        self.until = until


@dataclass(frozen=True, slots=True)
class Queued:
    """A task queued by the current transaction (None id: the same effect was queued before)."""

    id: int | None
    kind: str
    payload: Payload = field(default_factory=dict)
    claimed: bool = False  # created leased to its caller, to run inline after commit


_QUEUE_SQL = """
INSERT INTO task (merchant_id, kind, key, payload, status, attempts, run_after, lease_until, last_error,
                  created_at)
VALUES (:merchant, :kind, :key, :payload, :status, 0, :now, :lease, '', :now)
ON CONFLICT (kind, key) DO NOTHING
RETURNING id
"""


async def queue(
    kind: str, key: str, payload: Payload, *, merchant_id: int | None, now: datetime, inline: bool = False
) -> Queued:
    """Queue an effect in the caller's open transaction. `inline`: the caller will run it right after
    commit, so it is created claimed (no worker takes it before the caller's lease lapses)."""
    rows = await queries.fetch_rows(
        _QUEUE_SQL,
        merchant=merchant_id,
        kind=kind,
        key=key[:160],
        payload=_json(payload),
        status=(TaskStatus.RUNNING if inline else TaskStatus.PENDING).value,
        now=now,
        lease=now + LEASE if inline else None,
    )
    return Queued(int(rows[0]["id"]) if rows else None, kind, payload, claimed=inline)


_QUEUE_FOR_SQL = """
WITH source AS ({source})
INSERT INTO task (merchant_id, kind, key, payload, status, attempts, run_after, lease_until, last_error,
                  created_at)
SELECT :merchant, :kind, :key_prefix::text || source.id, jsonb_build_object(:payload_key::text, source.id),
       'pending', 0, :now, NULL, '', :now
  FROM source
ON CONFLICT (kind, key) DO NOTHING
RETURNING id, (payload ->> :payload_key::text)::bigint AS source_id
"""


async def queue_for(
    source_sql: str,
    kind: str,
    *,
    key_prefix: str,
    payload_key: str,
    merchant_id: int | None,
    now: datetime,
    **params: Any,
) -> tuple[int, Queued] | None:
    """Insert a row with `source_sql` (an `INSERT … ON CONFLICT DO NOTHING RETURNING id`) and, in the
    same statement (one round trip), the task `kind` about it: key `<key_prefix><id>`, payload
    `{payload_key: id}`. None when the source row existed already (nothing queued)."""
    rows = await queries.fetch_rows(
        _QUEUE_FOR_SQL.format(source=source_sql),
        merchant=merchant_id,
        kind=kind,
        key_prefix=key_prefix,
        payload_key=payload_key,
        now=now,
        **params,
    )
    if not rows:
        return None
    source_id = int(rows[0]["source_id"])
    return source_id, Queued(int(rows[0]["id"]), kind, {payload_key: source_id})


async def queue_for_all(
    source_sql: str,
    kind: str,
    *,
    key_prefix: str,
    payload_key: str,
    merchant_id: int | None,
    now: datetime,
    **params: Any,
) -> list[tuple[int, int]]:
    """`queue_for` for every row `source_sql` yields (a query or insert returning `id`), in one statement
    however many rows: (task id, source id) of each task queued, pending for the runner."""
    rows = await queries.fetch_rows(
        _QUEUE_FOR_SQL.format(source=source_sql),
        merchant=merchant_id,
        kind=kind,
        key_prefix=key_prefix,
        payload_key=payload_key,
        now=now,
        **params,
    )
    return [(int(row["id"]), int(row["source_id"])) for row in rows]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A task this process holds the lease of, for a batch handler."""

    id: int
    payload: Payload
    attempts: int


def _json(payload: Payload) -> str:
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str)


_CLAIM_SQL = """
UPDATE task SET status = 'running', lease_until = :lease
 WHERE id = :id AND (status = 'pending' AND run_after <= :now OR status = 'running' AND lease_until <= :now
                     OR (:mine AND status = 'running'))
RETURNING id, kind, payload, attempts
"""
_CLAIM_KEY_SQL = """
UPDATE task SET status = 'running', lease_until = :lease
 WHERE kind = :kind AND key = :key
   AND (status = 'pending' AND run_after <= :now OR status = 'running')
RETURNING id
"""
_DUE_SQL = """
SELECT id, attempts, CASE WHEN status = 'running' THEN lease_until ELSE run_after END AS due_at FROM task
 WHERE status = 'pending' AND run_after <= :now OR status = 'running' AND lease_until <= :now
 ORDER BY run_after, id
 LIMIT :limit
"""
_CLAIM_MANY_SQL = """
UPDATE task SET status = 'running', lease_until = :lease
 WHERE id = ANY(:ids::bigint[]) AND kind = :kind
   AND (status = 'pending' AND run_after <= :now OR status = 'running' AND lease_until <= :now)
RETURNING id, payload, attempts
"""
# One batch's outcomes: `failed` rows count an attempt and keep their error.
_OUTCOMES_SQL = """
UPDATE task t SET status = v.status, attempts = t.attempts + v.failed::int,
                  run_after = coalesce(v.run_after, t.run_after), lease_until = NULL,
                  done_at = CASE WHEN v.status = 'done' THEN :now::timestamptz END,
                  last_error = CASE WHEN v.failed THEN v.error ELSE t.last_error END
  FROM unnest(:ids::bigint[], :statuses::text[], :run_afters::timestamptz[], :failed::bool[], :errors::text[])
       AS v(id, status, run_after, failed, error)
 WHERE t.id = v.id
"""
_DONE_SQL = "UPDATE task SET status = 'done', lease_until = NULL, done_at = :now WHERE id = :id"
_DEFERRED_SQL = "UPDATE task SET status = 'pending', run_after = :until, lease_until = NULL WHERE id = :id"
_FAILED_SQL = """
UPDATE task SET status = :status, attempts = attempts + 1, run_after = :retry, lease_until = NULL,
                last_error = :error
 WHERE id = :id
"""


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failure, with up to 10% jitter (retries of many tasks spread)."""
    base = BACKOFF[min(attempts, len(BACKOFF)) - 1]
    return timedelta(seconds=base * (1 + random.random() / 10))


async def no_dispatch(ids: Sequence[int]) -> None:
    """No prompt runner: `run_due` picks the tasks up."""


@dataclass
class Effects:
    """The registry of effect handlers by kind, and how queued tasks reach a runner."""

    handlers: Mapping[str, Handler]
    inline: frozenset[str] = frozenset()
    dispatch: Dispatch = no_dispatch
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    batch: Mapping[str, BatchHandler] = field(default_factory=dict)  # kinds also run many at a time

    async def queue(self, kind: str, key: str, payload: Payload, *, merchant_id: int | None) -> Queued:
        if kind not in self.handlers:
            raise ValueError(f"no handler for effect kind {kind!r}")
        return await queue(
            kind, key, payload, merchant_id=merchant_id, now=self.clock(), inline=kind in self.inline
        )

    async def queue_for(
        self,
        source_sql: str,
        kind: str,
        *,
        key_prefix: str,
        payload_key: str,
        merchant_id: int | None,
        **params: Any,
    ) -> tuple[int, Queued] | None:
        """`queue_for` with this registry's clock, for a kind it has a handler for (never inline)."""
        if kind not in self.handlers or kind in self.inline:
            raise ValueError(f"no deferred handler for effect kind {kind!r}")
        return await queue_for(
            source_sql,
            kind,
            key_prefix=key_prefix,
            payload_key=payload_key,
            merchant_id=merchant_id,
            now=self.clock(),
            **params,
        )

    async def after_commit(self, *queued: Queued) -> list[Result]:
        """Run the inline tasks now (their results, in order; None for a failure, retried later) and
        dispatch the rest."""
        results: list[Result] = []
        later: list[int] = []
        for task in queued:
            if task.id is None:
                continue
            if task.kind in self.inline and task.claimed:  # leased to us at creation: no claim needed
                results.append((await self._execute(task.id, task.kind, task.payload, 0, self.clock()))[1])
            elif task.kind in self.inline:
                results.append(await self.run(task.id, mine=True))
            else:
                later.append(task.id)
        if later:
            try:
                await self.dispatch(later)
            except Exception:  # the tasks are committed: the sweep runs them if dispatch fails
                log.exception("task dispatch failed", extra={"tasks": later})
        return results

    async def run_queued(self, kind: str, key: str) -> Result:
        """After commit: run the task the caller's transaction queued under `key` (it knows the cause,
        not the task's id: e.g. a member's creation queues `member.registered`)."""
        now = self.clock()
        rows = await queries.fetch_rows(_CLAIM_KEY_SQL, kind=kind, key=key, now=now, lease=now + LEASE)
        return await self.run(int(rows[0]["id"]), mine=True) if rows else None

    async def run(self, task_id: int, *, mine: bool = False) -> Result:
        """Claim and run one task if it is due (`mine`: the caller queued it claimed, to run inline);
        its handler's result, or None (not run, or failed and retried later)."""
        return (await self._run(task_id, mine=mine, now=self.clock()))[1]

    async def _run(self, task_id: int, *, mine: bool, now: datetime) -> tuple[str | None, Result]:
        """("done" | "failed" | "deferred", the handler's result), or (None, None) when not claimed."""
        rows = await queries.fetch_rows(_CLAIM_SQL, id=task_id, now=now, lease=now + LEASE, mine=mine)
        if not rows:
            return None, None  # done, not due yet, or running elsewhere
        row = rows[0]
        return await self._execute(task_id, row["kind"], _loads(row["payload"]), int(row["attempts"]), now)

    async def _execute(
        self, task_id: int, kind: str, payload: Payload, attempts: int, now: datetime
    ) -> tuple[str, Result]:
        """Run a task this process holds the lease of, and record how it went."""
        handler = self.handlers.get(kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for effect kind {kind!r}")
            result = await handler(self, payload, now)
        except Deferred as wait:
            await queries.fetch_rows(_DEFERRED_SQL, id=task_id, until=wait.until)
            return "deferred", None
        except Exception as exc:
            await self._failed(task_id, kind, attempts + 1, exc, now)
            return "failed", None
        await queries.fetch_rows(_DONE_SQL, id=task_id, now=now)
        return "done", result

    async def _failed(self, task_id: int, kind: str, attempts: int, exc: Exception, now: datetime) -> None:
        status, error = _failure(task_id, kind, attempts, exc)
        await queries.fetch_rows(
            _FAILED_SQL, id=task_id, status=status.value, retry=now + backoff(attempts), error=error
        )

    async def claim(self, task_ids: Sequence[int], now: datetime) -> dict[str, list[Claimed]]:
        """Claim the due tasks among `task_ids` whose kind has a batch handler, in one UPDATE per such
        kind (other tasks are left alone): by kind."""
        claimed: dict[str, list[Claimed]] = {}
        for kind in self.batch:
            rows = await queries.fetch_rows(
                _CLAIM_MANY_SQL, ids=list(task_ids), kind=kind, now=now, lease=now + LEASE
            )
            if rows:
                claimed[kind] = [
                    Claimed(int(r["id"]), _loads(r["payload"]), int(r["attempts"])) for r in rows
                ]
        return claimed

    async def run_claimed(self, kind: str, tasks: Sequence[Claimed], now: datetime) -> dict[str, int]:
        """Run claimed tasks of `kind` with its batch handler and record their outcomes in one UPDATE:
        how many were done, failed and deferred."""
        try:
            outcomes = await self.batch[kind](self, tasks, now)
        except Exception as exc:  # the batch as a whole (e.g. the database gone): each task failed
            outcomes = {task.id: exc for task in tasks}
        counts = {"done": 0, "failed": 0, "deferred": 0}
        ids, statuses, run_afters, failed, errors = [], [], [], [], []
        for task in tasks:
            outcome = outcomes.get(task.id, LookupError(f"no outcome for task {task.id}"))
            status, run_after, error = TaskStatus.DONE, None, ""
            if isinstance(outcome, Deferred):
                status, run_after = TaskStatus.PENDING, outcome.until
                counts["deferred"] += 1
            elif isinstance(outcome, Exception):
                status, error = _failure(task.id, kind, task.attempts + 1, outcome)
                run_after = now + backoff(task.attempts + 1)
                counts["failed"] += 1
            else:
                counts["done"] += 1
            ids.append(task.id)
            statuses.append(status.value)
            run_afters.append(run_after)
            failed.append(bool(error))
            errors.append(error)
        await queries.fetch_rows(
            _OUTCOMES_SQL,
            ids=ids,
            statuses=statuses,
            run_afters=run_afters,
            failed=failed,
            errors=errors,
            now=now,
        )
        return counts

    async def due(self, now: datetime, limit: int = 500) -> list[tuple[int, int, datetime]]:
        """(id, attempts so far, the moment it fell due) of the tasks due at `now`, oldest first. That
        moment — its `run_after`, or the lapsed lease of a run whose process died — names one turn of
        the task: a retry, a deferral's end or a crash each make a new one."""
        rows = await queries.fetch_rows(_DUE_SQL, now=now, limit=limit)
        return [(int(row["id"]), int(row["attempts"]), row["due_at"]) for row in rows]

    async def run_many(
        self, task_ids: Sequence[int], *, side_by_side: int = 10, time_limit: float | None = None
    ) -> None:
        """Run tasks dispatched together (a worker's `run_tasks` job, the embedded runner): those of a
        batch kind claimed in one statement and handled together, the others `side_by_side` at a time,
        each claimed as `run` claims it. Each part is held to `time_limit` once it starts; one that times
        out or fails does not stop the others (a task left claimed is due again when its lease lapses)."""
        now = self.clock()
        claimed = await self.claim(task_ids, now)
        taken = {task.id for tasks in claimed.values() for task in tasks}
        turns = asyncio.Semaphore(side_by_side)

        async def run(work: Callable[[], Awaitable[object]], tasks: object) -> None:
            try:
                await asyncio.wait_for(work(), time_limit)
            except Exception:
                log.exception("task not run to its end", extra={"tasks": tasks})

        async def alone(task_id: int) -> None:
            async with turns:
                await run(functools.partial(self.run, task_id), task_id)

        await asyncio.gather(
            *(
                run(functools.partial(self.run_claimed, kind, tasks, now), [task.id for task in tasks])
                for kind, tasks in claimed.items()
            ),
            *(alone(task_id) for task_id in task_ids if task_id not in taken),
        )

    async def run_due(self, now: datetime, limit: int = 500) -> dict[str, int]:
        """Run what is due (the embedded scheduler; tests): the tasks of a batch kind many at a time,
        the others one at a time."""
        counts = {"done": 0, "failed": 0, "deferred": 0}
        due = [task_id for task_id, _, _ in await self.due(now, limit)]
        for start in range(0, len(due), RUN_DUE_CHUNK):
            chunk = due[start : start + RUN_DUE_CHUNK]
            claimed = await self.claim(chunk, now) if self.batch else {}
            for kind, tasks in claimed.items():
                for outcome, n in (await self.run_claimed(kind, tasks, now)).items():
                    counts[outcome] += n
            taken = {task.id for tasks in claimed.values() for task in tasks}
            for task_id in chunk:
                if task_id not in taken:
                    ran, _ = await self._run(task_id, mine=False, now=now)
                    if ran is not None:
                        counts[ran] += 1
        return counts


def _failure(task_id: int, kind: str, attempts: int, exc: Exception) -> tuple[TaskStatus, str]:
    """Log a failed run (an error when it was the last) and give the task's next status and error."""
    dead = attempts >= MAX_ATTEMPTS
    extra = {"task_id": task_id, "kind": kind, "attempts": attempts}
    if dead:
        log.error("task failed for the last time; left dead", extra=extra, exc_info=exc)
    else:
        log.warning("task failed; retried later", extra=extra, exc_info=exc)
    error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
    return (TaskStatus.DEAD if dead else TaskStatus.PENDING), error


def _loads(raw: object) -> dict[str, Any]:
    value = json.loads(raw) if isinstance(raw, str) else raw
    return value if isinstance(value, dict) else {}
