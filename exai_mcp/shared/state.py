"""The shared state of one server: the Redis link and the Redis twins built on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exai_mcp.config import Settings
from exai_mcp.middleware.cache import ResultCache
from exai_mcp.middleware.limits import TrackedLimiter
from exai_mcp.middleware.quota import TokenBucket
from exai_mcp.shared.breaker import SharedBreaker
from exai_mcp.shared.cache import SharedCache
from exai_mcp.shared.connection import RedisLink, SharedUnavailable
from exai_mcp.shared.flights import SharedFlights
from exai_mcp.shared.permits import SharedLimiter
from exai_mcp.shared.quota import SharedBucket
from exai_mcp.shared.threads import RedisThreadStore
from exai_mcp.store.threads import ThreadStore


@dataclass
class SharedState:
    link: RedisLink
    cache: SharedCache
    flights: SharedFlights
    limiters: dict[str, SharedLimiter] = field(default_factory=dict)

    def limiter(self, local: TrackedLimiter) -> SharedLimiter:
        """`local` made to hold across processes (kept for status and /health)."""
        shared = self.limiters[local.name] = SharedLimiter(self.link, local)
        return shared

    def breaker(self, name: str, *, failures: int, cooldown: float) -> SharedBreaker:
        return SharedBreaker(self.link, name, failures=failures, cooldown=cooldown)

    def bucket(self, name: str, per_minute: int) -> SharedBucket:
        return SharedBucket(self.link, name, local=TokenBucket(per_minute))

    def describe(self) -> dict[str, Any]:
        return {**self.link.describe(), "flights": self.flights.stats()}

    async def snapshot(self) -> dict[str, Any]:
        """What status shows: the link, and every shared limit as all servers hold it."""
        out = self.describe()
        limits: dict[str, Any] = {}
        for name, limiter in self.limiters.items():
            try:
                limits[name] = await limiter.snapshot()
            except SharedUnavailable:
                break
        out["limits"] = limits
        return out


def build_shared(settings: Settings, cache: ResultCache[Any]) -> SharedState | None:
    """The shared state EXAI_REDIS_URL names, or None (everything in process)."""
    if settings.redis_url is None:
        return None
    link = RedisLink(
        settings.redis_url.get_secret_value(),
        prefix=settings.redis_prefix,
        timeout=settings.redis_timeout,
        lease=settings.redis_lease,
    )
    return SharedState(link=link, cache=SharedCache(link, local=cache), flights=SharedFlights(link))


def thread_store(settings: Settings, local: ThreadStore) -> ThreadStore:
    """`local` alone, or threads in Redis with `local` for when Redis cannot serve."""
    if settings.redis_url is None:
        return local
    return RedisThreadStore(
        settings.redis_url.get_secret_value(),
        prefix=settings.redis_prefix,
        ttl_hours=settings.thread_ttl_hours,
        max_turns=settings.max_thread_turns,
        timeout=settings.redis_timeout,
        fallback=local,
    )


__all__ = ["SharedState", "build_shared", "thread_store"]
