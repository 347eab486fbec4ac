"""Per-process caches of what a merchant's managers change (the merchant row, staff accounts, the
loyalty programme, rule sets and tier ladders, reply-template overrides), invalidated explicitly
across processes.

One Redis counter, `KEY`, is the invalidation. A change bumps it once its transaction has committed
(`announce`: the API adapter does so after every successful change a manager or admin makes, so no
admin endpoint can forget it), and every request reads it in a Redis round trip it makes anyway — the
session lookup of `webhooks.auth`, the dedup claim of the WeChat callback — and hands it to `observe`.
An entry serves only requests that observed the version it was loaded under, so a change made through
one process is seen by the next request of every other. Code that observed no version (worker tasks,
the CLI, endpoints without a session, tests calling use cases directly) reads the database every
time. A process that dies between a commit and its bump leaves other processes' entries stale for at
most `MAX_AGE` seconds. Use cases that change cached data also `forget` it locally, for callers that
do not announce. Entries are shared: callers must not mutate what they get.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from typing import Any, TypeVar

from redis.asyncio import Redis

KEY = "config:version"
MAX_AGE = 300.0
MAX_ENTRIES = 10_000
T = TypeVar("T")

_observed: ContextVar[int | None] = ContextVar("config_version", default=None)
_entries: dict[tuple[Hashable, ...], tuple[int, float, Any]] = {}
_fixed: dict[tuple[Hashable, ...], Any] = {}  # what never changes once written (`fix`)


def observe(raw: bytes | str | int | None) -> int:
    """Record the version this request read from `KEY` (absent: 0); returns it."""
    version = int(raw or 0)
    _observed.set(version)
    return version


def observed() -> int | None:
    """The version the current request observed, or None (nothing may be served from the cache)."""
    return _observed.get()


async def cached(key: tuple[Hashable, ...], load: Callable[[], Awaitable[T]]) -> T:
    """The value under `key` (`(kind, merchant_id, ...)`) loaded at the observed version, else `load()`."""
    version = _observed.get()
    if version is None:
        return await load()
    now = time.monotonic()
    hit = _entries.get(key)
    if hit is not None and hit[0] == version and hit[1] > now:
        return hit[2]  # type: ignore[no-any-return]
    value = await load()
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    _entries[key] = (version, now + MAX_AGE, value)
    return value


def fix(key: tuple[Hashable, ...], value: Any) -> None:
    """Keep `value`, which never changes once written (a flash sale's terms), under `key` for callers
    that must use it before they can observe a version (`fixed`). Dropped by every `forget`."""
    if len(_fixed) >= MAX_ENTRIES:
        _fixed.clear()
    _fixed[key] = value


def fixed(key: tuple[Hashable, ...]) -> Any:
    """What `fix` kept under `key`, or None."""
    return _fixed.get(key)


def forget(merchant_id: int | None = None, kind: str | None = None) -> None:
    """Drop this process's entries (of one merchant, of one kind, or all)."""
    _fixed.clear()
    for key in list(_entries):
        if (merchant_id is None or key[1] == merchant_id) and (kind is None or key[0] == kind):
            _entries.pop(key, None)


# INCR; a counter that is missing (a fresh or flushed Redis) restarts at the clock in microseconds, above
# any value it had before, so no process takes an old entry for a current one.
_BUMP = """
local v = redis.call('INCR', KEYS[1])
if v == 1 then
  local t = redis.call('TIME')
  v = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[1], string.format('%.0f', v))
end
return v
"""


async def announce(redis: Redis) -> int:
    """After a committed change: every process's next request reloads what it caches."""
    forget()
    version = int(await redis.eval(_BUMP, 1, KEY))  # type: ignore[misc]  # redis-py's union
    if _observed.get() is not None:
        _observed.set(version)
    return version
