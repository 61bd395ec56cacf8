"""Successful results kept in memory for a while, so a client's retry costs nothing.

    cache = ResultCache(max_entries=256, ttl=600)
    hit = cache.get(key)          # None on a miss; counts hits and misses
    cache.put(key, result)

As layers: `ServeFromCache` before single-flight, `KeepInCache` inside the shared execution.

Built on `cachetools.TTLCache`: entries expire after `ttl` seconds and, when full, the least
recently used one is evicted. Only successful results are ever stored; `0` for either bound
disables the cache.
"""

from __future__ import annotations

import dataclasses
from typing import Generic, Protocol, TypeVar

from cachetools import TTLCache

from exai_mcp.middleware.call import Answer, Call, Next

T = TypeVar("T")


class AnswerCache(Protocol):
    """What the cache layers need: this class in process, `shared.cache.SharedCache` in Redis."""

    hits: int
    misses: int

    async def lookup(self, key: str) -> Answer | None: ...
    async def keep(self, key: str, value: Answer) -> None: ...
    def stats(self) -> dict[str, int | float | bool]: ...
    def __len__(self) -> int: ...


class ResultCache(Generic[T]):
    __slots__ = ("_store", "hits", "max_entries", "misses", "ttl")

    def __init__(self, *, max_entries: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.hits = 0
        self.misses = 0
        self._store: TTLCache[str, T] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl) if max_entries > 0 and ttl > 0 else None
        )

    @property
    def enabled(self) -> bool:
        return self._store is not None

    def get(self, key: str) -> T | None:
        if self._store is None:
            return None
        value = self._store.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, value: T) -> None:
        if self._store is not None:
            self._store[key] = value

    async def lookup(self, key: str) -> T | None:
        """`get` as the layers call it (the Redis cache needs an await)."""
        return self.get(key)

    async def keep(self, key: str, value: T) -> None:
        self.put(key, value)

    def __len__(self) -> int:
        if self._store is None:
            return 0
        self._store.expire()
        return len(self._store)

    def stats(self) -> dict[str, int | float | bool]:
        return {
            "enabled": self.enabled,
            "entries": len(self),
            "max_entries": self.max_entries,
            "ttl_secs": self.ttl,
            "hits": self.hits,
            "misses": self.misses,
        }


class ServeFromCache:
    """Layer: a call whose answer is already in the cache costs nothing.

    `after_queueing`: look only if the call waited for its client's permit on the way here
    (`Call.queued`): an identical call may have cached the answer meanwhile. A call that did
    not wait was looked up a moment ago, above the permit.
    """

    def __init__(self, cache: AnswerCache, *, after_queueing: bool = False) -> None:
        self.cache = cache
        self.after_queueing = after_queueing

    async def __call__(self, call: Call, call_next: Next) -> Answer:
        if call.key is None or (self.after_queueing and not call.queued):
            return await call_next(call)
        hit = await self.cache.lookup(call.key)
        if hit is not None:
            return dataclasses.replace(hit, cached=True)
        return await call_next(call)


class KeepInCache:
    """Layer, inside the shared execution: the answer is kept even when every caller has
    left meanwhile, so their retry finds it."""

    def __init__(self, cache: AnswerCache) -> None:
        self.cache = cache

    async def __call__(self, call: Call, call_next: Next) -> Answer:
        answer: Answer = await call_next(call)
        if call.key is not None:
            await self.cache.keep(call.key, answer)
        return answer
