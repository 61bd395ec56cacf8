"""State that several exai-mcp processes share through Redis (EXAI_REDIS_URL).

One module per concern, each the Redis twin of an in-process class that stays the default:

    connection.py  RedisLink: the client, timeouts, degrading and reconnecting, lease renewal
    cache.py       SharedCache        <- middleware.cache.ResultCache
    flights.py     SharedFlights      (across processes; middleware.singleflight within one)
    permits.py     SharedLimiter      <- middleware.limits.TrackedLimiter
    quota.py       SharedBucket       <- middleware.quota.TokenBucket
    breaker.py     SharedBreaker      <- middleware.breaker.CircuitBreaker
    threads.py     RedisThreadStore   <- store.threads.ThreadStore (SQLite)

`build_shared` makes them once from the settings (state.py); `server.build_services` picks
them when EXAI_REDIS_URL is set. Without it, nothing here imports `redis`: a server that
shares nothing pays neither its import time nor its memory. Every Redis twin falls back to its in-process twin while Redis cannot
serve, so Redis trouble makes the server degraded, never stuck.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exai_mcp.config import Settings
    from exai_mcp.middleware.cache import ResultCache
    from exai_mcp.shared.state import SharedState
    from exai_mcp.store.threads import ThreadStore


def build_shared(settings: Settings, cache: ResultCache[Any]) -> SharedState | None:
    """The shared state EXAI_REDIS_URL names, or None (everything in process)."""
    if settings.redis_url is None:
        return None
    from exai_mcp.shared import state

    return state.build_shared(settings, cache)


def thread_store(settings: Settings, local: ThreadStore) -> ThreadStore:
    """`local` alone, or threads in Redis with `local` for when Redis cannot serve."""
    if settings.redis_url is None:
        return local
    from exai_mcp.shared import state

    return state.thread_store(settings, local)


__all__ = ["build_shared", "thread_store"]
