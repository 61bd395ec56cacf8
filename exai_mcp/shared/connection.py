"""The one link to Redis that every shared backend uses, and what happens when Redis fails.

    link = RedisLink(url, prefix="exai:", timeout=1.0, lease=10)
    await link.start(task_group)                 # never fails: degraded when Redis is down
    value = await link.run(lambda r: r.get(link.key("cache", key)))

Guarantees:
- every operation is bounded by `timeout` (a cancel scope around it, and the socket timeouts
  under it), so no call ever waits longer than that on Redis;
- the first failure marks the link degraded, logs one WARNING (the URL without its password)
  and starts one background task that pings with backoff until Redis answers, then logs once
  that state is shared again. While degraded `run` raises `SharedUnavailable` at once, and each
  backend serves from its in-process twin;
- leases (permits, single-flight leadership) registered with `keep` are renewed every third of
  the lease by one background task, so a process that dies frees them within `lease` seconds.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskGroup
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from exai_mcp.redact import redact_url

T = TypeVar("T")
log = logging.getLogger("exai_mcp.shared")

MAX_TIDY_UPS = 1000  # tidy-ups kept for the reconnection; older ones lapse by themselves
RECONNECT_FIRST = 0.2  # seconds before the first reconnection attempt; doubles up to the cap
RECONNECT_CAP = 2.0
# What a failed Redis operation can raise: its own errors, sockets, or our time limit.
FAILURES = (RedisError, OSError, TimeoutError)


class SharedUnavailable(Exception):
    """Redis cannot be used right now; the caller goes on with in-process state."""


class RedisLink:
    __slots__ = (
        "_client",
        "_leases",
        "_reconnecting",
        "_serials",
        "_tg",
        "_tidy_ups",
        "degraded_since",
        "failures",
        "identity",
        "lease",
        "prefix",
        "timeout",
        "url",
    )

    def __init__(self, url: str, *, prefix: str, timeout: float, lease: float) -> None:
        self.url = redact_url(url)  # the only form that is ever shown
        self.prefix = prefix
        self.timeout = timeout
        self.lease = lease
        self.failures = 0
        self.degraded_since: float | None = None
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self._client = aioredis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # our timeout is the whole budget: no silent retries
        )
        self._tg: TaskGroup | None = None
        self._reconnecting = False
        self._leases: dict[int, Callable[[aioredis.Redis], Awaitable[Any]]] = {}
        self._serials = itertools.count(1)
        self._tidy_ups: list[tuple[float, Callable[[aioredis.Redis], Awaitable[Any]]]] = []

    # -- life ---------------------------------------------------------------------------

    async def start(self, task_group: TaskGroup) -> None:
        """Connect (or go degraded and keep trying in the background); start lease renewal."""
        self._tg = task_group
        try:
            await self.run(lambda r: r.ping())
        except SharedUnavailable:
            pass
        else:
            log.info("shared state in Redis at %s (prefix %r)", self.url, self.prefix)
        task_group.start_soon(self._renew_leases, name="redis lease renewal")

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
            await self._client.aclose()

    @property
    def degraded(self) -> bool:
        return self.degraded_since is not None

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def script(self, lua: str) -> AsyncScript:
        """A Lua script called by its hash (reloaded by redis-py after a Redis restart)."""
        return self._client.register_script(lua)

    # -- operations ---------------------------------------------------------------------

    async def run(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """One Redis operation within `timeout`; SharedUnavailable if Redis cannot serve."""
        if self.degraded:
            raise SharedUnavailable(f"Redis at {self.url} is unavailable")
        try:
            with anyio.fail_after(self.timeout):
                return await op(self._client)
        except FAILURES as exc:
            self.mark_failed(exc)
            raise SharedUnavailable(f"Redis at {self.url} is unavailable") from None

    def mark_failed(self, exc: BaseException) -> None:
        """Degrade (logged once per outage) and reconnect in the background."""
        self.failures += 1
        if self.degraded:
            return
        self.degraded_since = anyio.current_time()
        # The exception text can quote the URL; only its class is logged.
        log.warning(
            "Redis at %s failed (%s); going on with in-process state (degraded) and "
            "reconnecting in the background",
            self.url,
            type(exc).__name__,
        )
        if self._tg is not None and not self._reconnecting:
            self._reconnecting = True
            self._tg.start_soon(self._reconnect, name="redis reconnect")

    async def _reconnect(self) -> None:
        pause = RECONNECT_FIRST
        try:
            while True:
                await anyio.sleep(pause)
                try:
                    with anyio.fail_after(self.timeout):
                        # The pool's connections died with the old Redis: each would fail its
                        # next command once and degrade the state again. Fresh ones only.
                        await self._client.connection_pool.disconnect()
                        await self._client.ping()
                except FAILURES:
                    pause = min(pause * 2, RECONNECT_CAP)
                    continue
                await self._tidy_up()  # before anyone queues again
                self.degraded_since = None
                log.warning("Redis at %s answers again; state is shared again", self.url)
                return
        finally:
            self._reconnecting = False

    def tidy_up_later(self, op: Callable[[aioredis.Redis], Awaitable[Any]]) -> None:
        """Run `op` once Redis answers again, if that is within a lease: what a caller that
        went degraded left behind (its place in a shared line) would hold up the others."""
        self._tidy_ups.append((anyio.current_time(), op))
        del self._tidy_ups[:-MAX_TIDY_UPS]

    async def _tidy_up(self) -> None:
        due, self._tidy_ups = self._tidy_ups, []
        now = anyio.current_time()
        for queued_at, op in due:
            if now - queued_at > self.lease:  # lapsed by itself meanwhile
                continue
            with anyio.move_on_after(self.timeout), suppress(*FAILURES):
                await op(self._client)

    # -- leases -------------------------------------------------------------------------

    def keep(self, renew: Callable[[aioredis.Redis], Awaitable[Any]]) -> int:
        """Renew a lease every third of its lifetime until `release(handle)`."""
        handle = next(self._serials)
        self._leases[handle] = renew
        return handle

    def release(self, handle: int) -> None:
        self._leases.pop(handle, None)

    def release_all_leases(self) -> None:
        """Stop renewing every lease (what a process that dies does); for tests."""
        self._leases.clear()

    async def _renew_leases(self) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            for renew in list(self._leases.values()):
                try:
                    await self.run(renew)
                except SharedUnavailable:
                    break  # degraded: the leases lapse, as a dead process's would

    def describe(self) -> dict[str, object]:
        """For status and /health: never the password."""
        return {
            "url": self.url,
            "prefix": self.prefix,
            "state": "degraded" if self.degraded else "shared",
            "failures": self.failures,
            "lease_secs": self.lease,
        }
