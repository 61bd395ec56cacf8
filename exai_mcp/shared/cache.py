"""The result cache in Redis: one TTL and one entry bound for every process.

    cache = SharedCache(link, local=ResultCache(max_entries=256, ttl=600))
    hit = await cache.lookup(key)        # None on a miss
    await cache.keep(key, answer)

Each entry is a key with the TTL as its expiry; a sorted set of last uses keeps the bound:
storing evicts the least recently used entries beyond `max_entries`, atomically (Lua). When
Redis cannot serve, the in-process cache `local` answers instead (degraded), so a call never
waits on Redis longer than the link's timeout. `hits` and `misses` count this process's calls.
"""

from __future__ import annotations

import dataclasses

from exai_mcp.middleware.cache import ResultCache
from exai_mcp.middleware.call import Answer
from exai_mcp.shared.codec import decode_answer, encode_answer
from exai_mcp.shared.connection import RedisLink, SharedUnavailable

# KEYS: entry, lru; ARGV: entry key, value, ttl ms, max entries, entry prefix.
# Returns the number of entries after eviction.
_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #old, 2 do redis.call('DEL', ARGV[5] .. old[i]) end
end
return redis.call('ZCARD', KEYS[2])
"""
# KEYS: entry, lru; ARGV: entry key. A hit counts as a use for the LRU order.
_GET = """
local value = redis.call('GET', KEYS[1])
if value then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[2], 'XX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
end
return value
"""


class SharedCache:
    __slots__ = ("_entries", "_get", "_put", "hits", "link", "local", "misses")

    def __init__(self, link: RedisLink, *, local: ResultCache[Answer]) -> None:
        self.link = link
        self.local = local
        self.hits = 0
        self.misses = 0
        self._entries = 0
        self._get = link.script(_GET)
        self._put = link.script(_PUT)

    @property
    def enabled(self) -> bool:
        return self.local.enabled

    @property
    def max_entries(self) -> int:
        return self.local.max_entries

    @property
    def ttl(self) -> float:
        return self.local.ttl

    def _keys(self, key: str) -> list[str]:
        return [self.link.key("cache", key), self.link.key("cache-lru")]

    async def lookup(self, key: str) -> Answer | None:
        if not self.enabled:
            return None
        try:
            text = await self.link.run(lambda r: self._get(keys=self._keys(key), args=[key]))
        except SharedUnavailable:
            hit = await self.local.lookup(key)
            self.hits += hit is not None
            self.misses += hit is None
            return hit
        if text is None:
            self.misses += 1
            return None
        self.hits += 1
        return decode_answer(text)

    async def keep(self, key: str, value: Answer) -> None:
        if not self.enabled:
            return
        value = dataclasses.replace(value, cached=False)
        args = [
            key,
            encode_answer(value),
            max(1, int(self.ttl * 1000)),
            self.max_entries,
            self.link.key("cache", ""),
        ]
        try:
            self._entries = int(
                await self.link.run(lambda r: self._put(keys=self._keys(key), args=args))
            )
        except SharedUnavailable:
            await self.local.keep(key, value)

    def __len__(self) -> int:
        return self._entries

    def stats(self) -> dict[str, int | float | bool]:
        return {
            "enabled": self.enabled,
            "entries": len(self),
            "max_entries": self.max_entries,
            "ttl_secs": self.ttl,
            "hits": self.hits,
            "misses": self.misses,
            "shared": not self.link.degraded,
        }
