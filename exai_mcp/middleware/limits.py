"""Concurrency limits whose permits cannot leak and whose holders are always known.

    limiter = TrackedLimiter("kimi", 6)
    async with limiter.hold(Holder("req-7", "analyze", "kimi"), deadline, on_wait=report):
        ...                                   # at most 6 bodies run at once, first come first served

Built on `anyio.CapacityLimiter` (FIFO, and it records its borrowers). The permit is taken and
given back by one async context manager, so every exit path (return, error, cancellation,
deadline) releases it. Waiting counts against the request's deadline: a caller that cannot get a
permit in time gets `BusyError` saying how long it waited and how many were ahead of it.

In the pipeline a call takes its provider's permit first and the global one second, for one
attempt at a time, so no call ever holds a permit while it waits for another it may not get
soon: a queue at one provider never blocks a call to the other (no head-of-line blocking).
The provider limits protect each API key; the global limit caps the provider requests this
server runs at once across all providers, and by default binds only when both are busy.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from exai_mcp.errors import BusyError
from exai_mcp.middleware.call import Call, Next
from exai_mcp.middleware.deadline import Deadline

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a permit: unique per acquisition, so the limiter can tell holders apart."""

    request_id: str
    tool: str
    provider: str | None
    since: float = field(default_factory=time.monotonic)
    serial: int = field(default_factory=lambda: next(_ids))

    def age(self) -> float:
        return time.monotonic() - self.since

    def describe(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "tool": self.tool,
            "provider": self.provider,
            "held_secs": round(self.age(), 3),
        }


class TrackedLimiter:
    __slots__ = ("_holders", "_limiter", "name")

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        self._limiter = anyio.CapacityLimiter(total)
        self._holders: set[Holder] = set()

    @asynccontextmanager
    async def hold(
        self,
        holder: Holder,
        deadline: Deadline,
        on_wait: Callable[[str], None] | None = None,
    ) -> AsyncIterator[Holder]:
        try:
            self._limiter.acquire_on_behalf_of_nowait(holder)
        except anyio.WouldBlock:
            await self._wait_for_permit(holder, deadline, on_wait)
        self._holders.add(holder)
        try:
            yield holder
        finally:
            self._holders.discard(holder)
            self._limiter.release_on_behalf_of(holder)

    async def _wait_for_permit(
        self, holder: Holder, deadline: Deadline, on_wait: Callable[[str], None] | None
    ) -> None:
        ahead = self._limiter.statistics().tasks_waiting
        if on_wait is not None:
            on_wait(f"waiting for a '{self.name}' permit: {ahead} ahead in line")
        started = time.monotonic()
        with anyio.move_on_after(deadline.left_to_wait()) as scope:
            await self._limiter.acquire_on_behalf_of(holder)
        if scope.cancelled_caught:
            raise BusyError(
                f"server busy: waited {time.monotonic() - started:.1f} s for a '{self.name}' "
                f"permit ({self.total} in use, {ahead} were ahead in line) and the request's "
                "deadline ran out; try again later or raise the limit"
            )

    @property
    def total(self) -> int:
        return int(self._limiter.total_tokens)

    def holders(self) -> list[Holder]:
        return sorted(self._holders, key=lambda h: h.since)

    def in_use(self) -> int:
        return int(self._limiter.borrowed_tokens)

    def waiting(self) -> int:
        return self._limiter.statistics().tasks_waiting

    def borrowers(self) -> int:
        """Borrowers as anyio records them: must always equal `len(holders())`."""
        return len(self._limiter.statistics().borrowers)

    def stats(self) -> dict[str, int]:
        return {"limit": self.total, "in_use": self.in_use(), "waiting": self.waiting()}


class Limiter(Protocol):
    """What the layers, the health monitor and `status` use: `TrackedLimiter` in process,
    `shared.permits.SharedLimiter` across processes."""

    name: str

    @property
    def total(self) -> int: ...
    def hold(
        self, holder: Holder, deadline: Deadline, on_wait: Callable[[str], None] | None = None
    ) -> AbstractAsyncContextManager[Holder]: ...
    def holders(self) -> list[Holder]: ...
    def in_use(self) -> int: ...
    def waiting(self) -> int: ...
    def borrowers(self) -> int: ...
    def stats(self) -> dict[str, int]: ...


class ProviderLimit:
    """Layer: at most the provider's limit of attempts run at once (EXAI_<P>_MAX_INFLIGHT)."""

    def __init__(self, limits: dict[str, Limiter]) -> None:
        self.limits = limits

    async def __call__(self, call: Call, call_next: Next) -> object:
        holder = Holder(call.request_id, call.tool, call.provider)
        async with self.limits[call.provider].hold(holder, call.deadline, on_wait=call.report):
            return await call_next(call)


class GlobalLimit:
    """Layer: at most EXAI_MAX_INFLIGHT provider requests at once across all providers.

    Taken after the provider's permit, so only calls that are about to run hold it."""

    def __init__(self, limit: Limiter) -> None:
        self.limit = limit

    async def __call__(self, call: Call, call_next: Next) -> object:
        holder = Holder(call.request_id, call.tool, call.provider)
        async with self.limit.hold(holder, call.deadline, on_wait=call.report):
            return await call_next(call)
