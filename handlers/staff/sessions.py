"""Opaque bearer sessions for mini-program members and staff, kept in Redis.

A token is `secrets.token_urlsafe(32)`; only its SHA-256 is stored (`sess:<hex>`), so a Redis dump does not
leak usable tokens. Each record expires on its own and can be revoked one by one, or all sessions of one
subject at once (a per-subject index set). Server-side data such as the mini-program `session_key` lives in
the record and is never returned to the client.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from handlers.core import config_cache

MEMBER_TTL_SECONDS = 7 * 24 * 3600
STAFF_TTL_SECONDS = 12 * 3600
MAX_TOKEN_CHARS = 128
_PREFIX = "sess:"


class SessionKind(StrEnum):
    MEMBER = "member"
    STAFF = "staff"


DEFAULT_TTL = {SessionKind.MEMBER: MEMBER_TTL_SECONDS, SessionKind.STAFF: STAFF_TTL_SECONDS}


@dataclass(frozen=True, slots=True)
class Session:
    kind: SessionKind
    merchant_id: int
    subject_id: int  # the member id or the staff id
    issued_at: float
    expires_at: float
    data: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class IssuedSession:
    token: str = field(repr=False)
    session: Session

    @property
    def expires_in(self) -> int:
        return max(0, int(self.session.expires_at - self.session.issued_at))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key(digest: str) -> str:
    return _PREFIX + digest


def record_key(token: str) -> str | None:
    """The Redis key of the record a bearer `token` would name (None: not a possible token), for a
    script that reads the session in a round trip of its own; `decode` reads what it finds there."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    return _key(token_digest(token))


def _index_key(kind: SessionKind, subject_id: int) -> str:
    return f"{_PREFIX}idx:{kind}:{subject_id}"


class SessionStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def issue(
        self,
        kind: SessionKind,
        merchant_id: int,
        subject_id: int,
        *,
        ttl: int | None = None,
        data: Mapping[str, str] | None = None,
    ) -> IssuedSession:
        seconds = ttl if ttl is not None else DEFAULT_TTL[kind]
        if seconds <= 0:
            raise ValueError("ttl must be positive")
        token = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(kind, merchant_id, subject_id, now, now + seconds, dict(data or {}))
        record = {
            "kind": kind.value,
            "merchant_id": merchant_id,
            "subject_id": subject_id,
            "issued_at": now,
            "expires_at": now + seconds,
            "data": dict(session.data),
        }
        digest = token_digest(token)
        index = _index_key(kind, subject_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_key(digest), json.dumps(record), ex=seconds)
            pipe.sadd(index, digest)
            pipe.expire(index, seconds, nx=True)  # a fresh index gets this session's lifetime,
            pipe.expire(index, seconds, gt=True)  # an existing one lives as long as its longest session
            await pipe.execute()
        return IssuedSession(token, session)

    async def resolve(self, token: str) -> Session | None:
        """The live session for `token`, or None (unknown, expired, revoked or malformed). The same
        round trip reads the configuration version the request's caches serve (`config_cache.observe`)."""
        key = record_key(token)
        if key is None:
            return None
        raw, version = await self.redis.mget(key, config_cache.KEY)
        config_cache.observe(version)
        return decode(raw)

    async def revoke(self, token: str) -> bool:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return False
        digest = token_digest(token)
        raw = await self.redis.getdel(_key(digest))
        if raw is None:
            return False
        session = decode(raw)
        if session is not None:
            await self.redis.srem(_index_key(session.kind, session.subject_id), digest)  # type: ignore[misc]
        return True

    async def revoke_all(self, kind: SessionKind, subject_id: int) -> int:
        """End every session of one member or staff account (e.g. password change, deactivation)."""
        index = _index_key(kind, subject_id)
        digests = [bytes(d).decode() for d in await self.redis.smembers(index)]  # type: ignore[misc]
        if not digests:
            return 0
        removed = int(await self.redis.delete(*(_key(d) for d in digests)))
        await self.redis.delete(index)
        return removed


def decode(raw: Any) -> Session | None:
    """The session a stored record describes (None: no record, or a malformed one)."""
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        return Session(
            kind=SessionKind(record["kind"]),
            merchant_id=int(record["merchant_id"]),
            subject_id=int(record["subject_id"]),
            issued_at=float(record["issued_at"]),
            expires_at=float(record["expires_at"]),
            data={str(k): str(v) for k, v in dict(record.get("data") or {}).items()},
        )
    except (ValueError, KeyError, TypeError):
        return None
