"""A circuit breaker whose open state every process sees: one Redis key per provider.

    breaker = SharedBreaker(link, "kimi", failures=5, cooldown=30)
    async with breaker.guard():       # BreakerOpen at once if any server opened it
        ...

The breaker itself is `CircuitBreaker` (same counting, same probe). What is shared is its
verdict: a process that opens it writes the reason into a key that expires with the cooldown;
a process that closes it (a good probe) deletes the key. Before every attempt, and whenever
`status` asks, a process reads the key: an open breaker elsewhere opens it here for what is
left of the cooldown, so no server keeps calling a provider another has found failing (or whose
key was rejected). Failure counts stay per process. When Redis cannot serve, each process
keeps its own breaker (degraded).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from exai_mcp.middleware.breaker import BreakerState, CircuitBreaker
from exai_mcp.shared.connection import RedisLink, SharedUnavailable


class SharedBreaker(CircuitBreaker):
    __slots__ = ("_link", "_published")

    def __init__(self, link: RedisLink, name: str, *, failures: int, cooldown: float) -> None:
        super().__init__(name, failures=failures, cooldown=cooldown)
        self._link = link
        self._published = False  # whether the open state here is also the one in Redis

    @property
    def _key(self) -> str:
        return self._link.key("breaker", self.name)

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        await self.refresh()
        before = (self._opened_at, self.times_opened)
        try:
            async with super().guard():
                yield
        finally:
            if (self._opened_at, self.times_opened) != before:
                with anyio.CancelScope(shield=True):
                    await self._publish()

    async def refresh(self) -> None:
        """Adopt what other processes decided: open here if open there, closed if closed."""

        async def read(r: object) -> list[object]:
            pipe = self._link.client.pipeline(transaction=True)
            pipe.get(self._key)
            pipe.pttl(self._key)
            return list(await pipe.execute())

        try:
            reason, left_ms = await self._link.run(read)
        except SharedUnavailable:
            return
        if reason is not None and int(left_ms) > 0:  # type: ignore[call-overload]
            if self.state is BreakerState.CLOSED:
                self._opened_at = self._clock() - max(0.0, self.cooldown - int(left_ms) / 1000)  # type: ignore[call-overload]
                self._reason = f"{reason} (seen by another server)"
                self._published = True
        elif self._published and self.state is BreakerState.OPEN:
            self._record_success()  # another server's probe closed it
            self._published = False

    async def _publish(self) -> None:
        try:
            if self._opened_at is None:
                await self._link.run(lambda r: r.delete(self._key))
                self._published = False
                return
            left_ms = int(max(0.0, self._opened_at + self.cooldown - self._clock()) * 1000)
            if left_ms > 0:
                await self._link.run(lambda r: r.set(self._key, self._reason, px=left_ms))
                self._published = True
        except SharedUnavailable:
            pass
