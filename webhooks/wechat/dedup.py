"""Once-only handling of WeChat pushes, and the same answer for retries.

WeChat retries a push three times when it has no answer within 5 s. Two separate guarantees:

- **At most once, across processes** (Redis): the first delivery claims the push's key with SET NX and
  a TTL; every other delivery, in any process, is a duplicate and changes nothing.
- **The same answer** (this process): the first delivery's answer is kept in a bounded in-process
  book, so a concurrent duplicate or a later retry that reaches the same process gets the same reply.
  A retry that reaches another process gets an empty body, which WeChat treats as "no reply, do not
  retry" — the behaviour its documentation prescribes. Keeping answers in-process costs no Redis round
  trip on the hot path (each one is a loopback send, the largest cost of a chat reply); since we answer
  within 4 s, WeChat only retries when our answer was lost on the way, which is rare.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from handlers.core import config_cache
from handlers.core.chat import ChatReply, Prefetched
from handlers.core.errors import DomainError, ErrorCode
from handlers.rules.notices import CUSTOM_WINDOW

# Longer than the whole replay window (a timestamp may be up to 5 minutes either side of now).
TTL_SECONDS = 2 * 300 + 60
MAX_ANSWERS = 20_000
OPEN_GRACE_SECONDS = 0.5  # how long a duplicate waits for the first delivery to open its entry

# KEYS[1] the push's dedup key; KEYS[2] the signature's key ("" in encrypted modes); KEYS[3] the member's
# customer-service window ("" for WeChat's own events); KEYS[4] the configuration version
# (`config_cache.KEY`); KEYS[5] the member's dialog state ("": not wanted). ARGV[1] the push key;
# ARGV[2] the TTL; ARGV[3] now (unix s); ARGV[4] the window's life. Returns {1 first delivery |
# 0 duplicate | -1 signature reused, the version, the dialog state or false}.
_CLAIM = """
local version = redis.call('GET', KEYS[4]) or '0'
if KEYS[2] ~= '' then
  local owner = redis.call('GET', KEYS[2])
  if owner and owner ~= ARGV[1] then return {-1, version} end
  if not owner then redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2]) end
end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  if KEYS[3] ~= '' then
    redis.call('HSET', KEYS[3], 'opened', ARGV[3], 'sent', 0)
    redis.call('EXPIRE', KEYS[3], ARGV[4])
  end
  local dialog = false
  if KEYS[5] ~= '' then dialog = redis.call('GET', KEYS[5]) end
  return {1, version, dialog}
end
return {0, version}
"""


class SignatureReused(DomainError):
    code = ErrorCode.BAD_SIGNATURE


def _key(merchant_id: int, push_key: str) -> str:
    return f"wx:push:{merchant_id}:{push_key}"


@dataclass(frozen=True, slots=True)
class Claimed:
    first: bool
    dialog: Prefetched | None  # the member's dialog state, when asked for (first deliveries only)


async def claim(
    redis: Redis, merchant_id: int, push_key: str, *, signature: str = "", window: str = "", now: float = 0
) -> bool:
    """True for the first delivery of a push (the caller then handles it); False for a duplicate."""
    claimed = await claim_push(redis, merchant_id, push_key, signature=signature, window=window, now=now)
    return claimed.first


async def claim_push(
    redis: Redis,
    merchant_id: int,
    push_key: str,
    *,
    signature: str = "",
    window: str = "",
    now: float = 0,
    dialog: str = "",
) -> Claimed:
    """`claim`, which also reads in its round trip the configuration version the request's caches serve
    (`config_cache.observe`) and, for a first delivery, the member's dialog state under key `dialog`.

    In plaintext mode the URL's signature does not cover the body, so `signature` binds it to this one
    push: the same signed URL with another body (a replay of a leaked URL) is refused. WeChat's own
    retries repeat the same push and stay duplicates. A member's own message or event also opens their
    48-hour customer-service `window` (`handlers.notices.reach`). One round trip (a Lua script).
    """
    sig_key = f"wx:sig:{merchant_id}:{signature}" if signature else ""
    outcome, version, *state = await _script(redis)(
        keys=[_key(merchant_id, push_key), sig_key, window, config_cache.KEY, dialog],
        args=[push_key, TTL_SECONDS, int(now), int(CUSTOM_WINDOW.total_seconds())],
    )
    if int(outcome) < 0:
        raise SignatureReused("该签名已用于另一条消息")
    config_cache.observe(version)
    first = bool(int(outcome))
    return Claimed(first, Prefetched(state[0] or None) if first and dialog else None)


def _script(redis: Redis) -> AsyncScript:
    """The claim script, registered once per client (redis-py hashes it at registration)."""
    script = _SCRIPTS.get(id(redis))
    if script is None or script.registered_client is not redis:
        script = _SCRIPTS[id(redis)] = redis.register_script(_CLAIM)
    return script


_SCRIPTS: dict[int, AsyncScript] = {}


class AnswerBook:
    """The answers this process gave, by push, for `TTL_SECONDS` and at most `MAX_ANSWERS` of them."""

    def __init__(self, *, ttl: float = TTL_SECONDS, size: int = MAX_ANSWERS) -> None:
        self._ttl, self._size = ttl, size
        self._answers: OrderedDict[str, tuple[float, asyncio.Future[ChatReply | None]]] = OrderedDict()

    def open(self, merchant_id: int, push_key: str) -> asyncio.Future[ChatReply | None]:
        """Called by the first delivery: the future its answer will be set on."""
        self._evict(time.monotonic())
        future: asyncio.Future[ChatReply | None] = asyncio.get_running_loop().create_future()
        self._answers[_key(merchant_id, push_key)] = (time.monotonic() + self._ttl, future)
        return future

    async def earlier_answer(self, merchant_id: int, push_key: str, *, until: float) -> ChatReply | None:
        """The first delivery's reply, waiting until `until` (monotonic) while it is being worked out.

        None (an empty body) if that delivery answered nothing, was handled by another process, or has
        not answered by the deadline.
        """
        key = _key(merchant_id, push_key)
        # The first delivery opens its entry right after its claim returns; a duplicate whose claim
        # answer was read first waits a moment for it (it never appears if another process won).
        settle = min(until, time.monotonic() + OPEN_GRACE_SECONDS)
        while (entry := self._answers.get(key)) is None:
            if time.monotonic() >= settle:
                return None
            await asyncio.sleep(0.005)
        try:
            return await asyncio.wait_for(asyncio.shield(entry[1]), max(0.0, until - time.monotonic()))
        except TimeoutError:
            return None

    def __len__(self) -> int:
        return len(self._answers)

    def _evict(self, now: float) -> None:
        while self._answers:
            key, (expires, future) = next(iter(self._answers.items()))
            if expires > now and len(self._answers) < self._size:
                return
            if not future.done():
                future.cancel()
            del self._answers[key]
