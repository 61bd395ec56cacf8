"""Concurrency limits that hold across processes: permits are leases in Redis.

    limiter = SharedLimiter(link, TrackedLimiter("kimi", 6))
    async with limiter.hold(holder, deadline, on_wait=report):
        ...                  # at most 6 bodies run at once on every server sharing the Redis

A call first takes a permit of the in-process limiter `local` (FIFO in this process; it also
keeps the holders the health monitor and `status` see), then a permit in Redis. There a
permit is a member of a sorted set scored by its expiry; taking, renewing and giving one back
are Lua scripts, so no two processes can take the last permit. Waiters queue in arrival order
(a second sorted set) and take a permit only when the ones ahead of them have theirs or gave up:
first come, first served across processes. A waiter sleeps on the limiter's channel (a release
wakes it) or until the first permit in use would lapse; it never waits past its deadline
(`BusyError`, as in process). A process that dies frees nothing by hand: its permits lapse
within the lease, its places in line with them. When Redis cannot serve, the local permit
alone admits the call (degraded), so a call never hangs on Redis; such a call holds no Redis
permit, so none is counted twice when Redis is back.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio

from exai_mcp.errors import BusyError
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.middleware.limits import Holder, TrackedLimiter
from exai_mcp.shared.connection import FAILURES, RedisLink, SharedUnavailable

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
# Looks at the line one waiter may take: each follows a release or a lapse, so only a long
# wait on a busy limit comes near it; the deadline ends the wait long before.
MAX_TURNS = 100_000
# KEYS: holders, queue, info, sequence. ARGV: token, limit, lease ms, holder JSON, wait prefix.
# Returns {1} when the permit is taken, else {0, place in line, ms until the first permit lapses}.
_ACQUIRE = (
    _NOW
    + """
local token, lease, waitkey = ARGV[1], tonumber(ARGV[3]), ARGV[5] .. ARGV[1]
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('HDEL', KEYS[3], dead)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, other in ipairs(redis.call('ZRANGE', KEYS[2], 0, 63)) do
  if other ~= token and redis.call('EXISTS', ARGV[5] .. other) == 0 then
    redis.call('ZREM', KEYS[2], other)
  end
end
if redis.call('ZSCORE', KEYS[1], token) then return {1} end
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
local place = redis.call('ZRANK', KEYS[2], token)
local ahead = place or redis.call('ZCARD', KEYS[2])
if free > 0 and ahead < free then
  redis.call('ZREM', KEYS[2], token)
  redis.call('DEL', waitkey)
  redis.call('ZADD', KEYS[1], now + lease, token)
  redis.call('HSET', KEYS[3], token, ARGV[4])
  return {1}
end
if not place then redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), token) end
redis.call('SET', waitkey, '1', 'PX', lease)
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local lapse = lease
if #first > 0 then lapse = tonumber(first[2]) - now end
return {0, ahead, lapse}
"""
)
# KEYS: holders, queue, info. ARGV: token, wait prefix, channel.
_RELEASE = """
local held = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', ARGV[2] .. ARGV[1])
if held > 0 then redis.call('PUBLISH', ARGV[3], 'free') end
return held
"""
# KEYS: holders. ARGV: token, lease ms.
_RENEW = (
    _NOW
    + """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
end
return -1
"""
)


class SharedLimiter:
    """A `TrackedLimiter` (the in-process part) whose permits also hold across processes."""

    __slots__ = ("_acquire", "_release", "_renew", "degraded_admits", "link", "local")

    def __init__(self, link: RedisLink, local: TrackedLimiter) -> None:
        self.link = link
        self.local = local
        self.degraded_admits = 0
        self._acquire = link.script(_ACQUIRE)
        self._release = link.script(_RELEASE)
        self._renew = link.script(_RENEW)

    # What the health monitor, the layers and `status` read: the in-process view.
    @property
    def name(self) -> str:
        return self.local.name

    @property
    def total(self) -> int:
        return self.local.total

    def holders(self) -> list[Holder]:
        return self.local.holders()

    def in_use(self) -> int:
        return self.local.in_use()

    def waiting(self) -> int:
        return self.local.waiting()

    def borrowers(self) -> int:
        return self.local.borrowers()

    def stats(self) -> dict[str, int]:
        return self.local.stats()

    def _keys(self) -> list[str]:
        k = self.link.key
        return [k("limit", self.name, "holders"), k("limit", self.name, "queue"),
                k("limit", self.name, "info"), k("limit", self.name, "seq")]  # fmt: skip

    @property
    def _channel(self) -> str:
        return self.link.key("limit", self.name, "free")

    @property
    def _wait_prefix(self) -> str:
        return self.link.key("limit", self.name, "waiting", "")

    @asynccontextmanager
    async def hold(
        self,
        holder: Holder,
        deadline: Deadline,
        on_wait: Callable[[str], None] | None = None,
    ) -> AsyncIterator[Holder]:
        async with self.local.hold(holder, deadline, on_wait) as held:
            token = f"{uuid.uuid4().hex}"
            shared = await self._take(token, holder, deadline, on_wait)
            lease_ms = int(self.link.lease * 1000)
            handle = (
                self.link.keep(lambda r: self._renew(keys=self._keys()[:1], args=[token, lease_ms]))
                if shared
                else None
            )
            try:
                yield held
            finally:
                if handle is not None:
                    self.link.release(handle)
                    await self._give_back(token)

    async def _take(
        self,
        token: str,
        holder: Holder,
        deadline: Deadline,
        on_wait: Callable[[str], None] | None,
    ) -> bool:
        """True once the Redis permit is ours; False when Redis cannot serve (degraded)."""
        info = json.dumps({**holder.describe(), "server": self.link.identity, "since": time.time()})
        args = [token, self.total, int(self.link.lease * 1000), info, self._wait_prefix]
        started = time.monotonic()
        pubsub = None
        try:
            ahead = 0
            for _turn in range(MAX_TURNS):
                reply = await self.link.run(lambda r: self._acquire(keys=self._keys(), args=args))
                if reply[0] == 1:
                    return True
                ahead, lapse_ms = int(reply[1]), int(reply[2])
                if pubsub is None:  # subscribe, then look again: a release may fall in between
                    if on_wait is not None:
                        on_wait(
                            f"waiting for a '{self.name}' permit shared with other servers: "
                            f"{ahead} ahead in line"
                        )
                    pubsub = self.link.client.pubsub()
                    await self.link.run(lambda r, p=pubsub: p.subscribe(self._channel))
                    continue
                if deadline.left_to_wait() <= 0:
                    break
                # Until a release, the first permit's lapse, or our own place's heartbeat.
                wait = min(max(lapse_ms, 1) / 1000, self.link.lease / 2, deadline.left_to_wait())
                try:
                    with anyio.move_on_after(wait + self.link.timeout):
                        await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                except FAILURES as exc:
                    self.link.mark_failed(exc)
                    raise SharedUnavailable(self.link.url) from None
            raise BusyError(
                f"server busy: waited {time.monotonic() - started:.1f} s for a '{self.name}' "
                f"permit shared with other servers ({self.total} in use, {ahead} were ahead in "
                "line) and the request's deadline ran out; try again later or raise the limit"
            )
        except SharedUnavailable:
            self.degraded_admits += 1
            # Our place in the line stays until its heartbeat lapses; leave it once Redis is back.
            self.link.tidy_up_later(self._leaving(token))
            return False
        except BaseException:
            await self._give_back(token)  # our place in line, or a permit taken as we left
            raise
        finally:
            if pubsub is not None:
                with (
                    anyio.CancelScope(shield=True),
                    anyio.move_on_after(self.link.timeout),
                    suppress(FAILURES),
                ):
                    await pubsub.aclose()

    async def _give_back(self, token: str) -> None:
        # If Redis cannot serve, the lease lapses by itself.
        with anyio.CancelScope(shield=True), suppress(SharedUnavailable):
            await self.link.run(self._leaving(token))

    def _leaving(self, token: str) -> Callable[[Any], Awaitable[Any]]:
        """The Redis operation that gives back `token`'s permit, or its place in the line."""
        return lambda r: self._release(
            keys=self._keys()[:3], args=[token, self._wait_prefix, self._channel]
        )

    async def snapshot(self) -> dict[str, Any]:
        """Permits in use on every server, and who holds them (for status and /health)."""
        holders_key, queue_key, info_key, _ = self._keys()

        async def read(r: Any) -> list[Any]:
            now = await r.time()
            now_ms = now[0] * 1000 + now[1] // 1000
            pipe = r.pipeline(transaction=False)
            pipe.zrangebyscore(holders_key, now_ms, "+inf")
            pipe.zcard(queue_key)
            pipe.hgetall(info_key)
            return [now[0] + now[1] / 1e6, *await pipe.execute()]

        now, tokens, queued, info = await self.link.run(read)
        holders = []
        for token in tokens:
            entry = json.loads(info.get(token, "{}"))
            since = entry.pop("since", now)
            entry["held_secs"] = round(max(0.0, now - since), 3)
            holders.append(entry)
        return {"limit": self.total, "in_use": len(tokens), "waiting": queued, "holders": holders}
