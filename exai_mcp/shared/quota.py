"""A provider quota bucket in Redis: every process draws on the same tokens.

    bucket = SharedBucket(link, "kimi:rpm", local=TokenBucket(30))
    booked, wait = await bucket.reserve(1, max_wait=deadline.remaining())

The same token bucket as `middleware.quota.TokenBucket` (same booking rule: never overtaken,
not booked past `max_wait`), kept in one Redis hash and updated by one Lua script on Redis's
clock, so processes on machines with different clocks agree. When Redis cannot serve, the
in-process bucket `local` books instead (degraded: each process then allows the full rate).
"""

from __future__ import annotations

from exai_mcp.middleware.quota import TokenBucket
from exai_mcp.shared.connection import RedisLink, SharedUnavailable

# KEYS: bucket. ARGV: per minute, cost, max wait ms. Returns {booked, wait ms}.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local rate = cap / 60000.0
local cost = math.min(tonumber(ARGV[2]), cap)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or cap
local stamp = tonumber(state[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens < cost then wait = math.ceil((cost - tokens) / rate) end
local booked = 0
if wait <= tonumber(ARGV[3]) then
  tokens = tokens - cost
  booked = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) / rate) + 60000)
return {booked, wait}
"""


class SharedBucket:
    __slots__ = ("_reserve", "key", "link", "local", "per_minute")

    def __init__(self, link: RedisLink, name: str, *, local: TokenBucket) -> None:
        self.link = link
        self.key = link.key("quota", name)
        self.local = local
        self.per_minute = local.per_minute
        self._reserve = link.script(_RESERVE)

    async def reserve(self, cost: int, max_wait: float) -> tuple[bool, float]:
        max_wait_ms = min(max_wait, 10**9) * 1000  # inf is no number Lua can read
        try:
            booked, wait_ms = await self.link.run(
                lambda r: self._reserve(
                    keys=[self.key], args=[self.per_minute, cost, int(max_wait_ms)]
                )
            )
        except SharedUnavailable:
            return self.local.reserve_now(cost, max_wait)
        return bool(booked), int(wait_ms) / 1000
