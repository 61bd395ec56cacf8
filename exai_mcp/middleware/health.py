"""A background check that every permit has a live holder and no holder is stuck.

    monitor = HealthMonitor(current_limiters, stuck_after=server_deadline, interval=30)
    task_group.start_soon(monitor.run)

Each round compares, for every limiter, the permits in use with the holders it knows; a holder
older than the server deadline is reported as stuck (WARNING on stderr with request id, tool and
age). It only reports: it never releases a permit it does not own (the holder's own `async with`
does that). It logs only when something is wrong or changes, never an all-is-well line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

import anyio

from exai_mcp.middleware.limits import Limiter

log = logging.getLogger("exai_mcp.health")


class HealthMonitor:
    __slots__ = ("_clock", "_last", "_limiters", "interval", "stuck_after")

    def __init__(
        self,
        limiters: Sequence[Limiter] | Callable[[], Iterable[Limiter]],
        *,
        stuck_after: float,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        # A callable is asked each round: limiters come and go (one per busy client).
        if callable(limiters):
            self._limiters = limiters
        else:
            fixed = tuple(limiters)
            self._limiters = lambda: fixed
        self.stuck_after = stuck_after
        self.interval = interval
        self._last: frozenset[str] = frozenset()

    def problems(self) -> dict[str, str]:
        """What is wrong now, keyed by what it is about (so a growing age is no new problem)."""
        found: dict[str, str] = {}
        for limiter in self._limiters():
            holders = limiter.holders()
            if limiter.in_use() != len(holders) or limiter.borrowers() != len(holders):
                found[f"{limiter.name}:count"] = (
                    f"limiter '{limiter.name}': {limiter.in_use()} permits in use but "
                    f"{len(holders)} known holders"
                )
            for h in holders:
                age = self._clock() - h.since
                if age > self.stuck_after:
                    found[f"{limiter.name}:{h.serial}"] = (
                        f"limiter '{limiter.name}': request {h.request_id} ({h.tool}) has held "
                        f"a permit for {age:.0f} s, past the {self.stuck_after:g} s deadline"
                    )
        return found

    def check(self) -> list[str]:
        """One round: the problems found now, logged when they differ from the last round."""
        found = self.problems()
        current = frozenset(found)
        if current != self._last:
            for key in sorted(current - self._last):
                log.warning("health: %s", found[key])
            if not found:
                log.info("health: all permits accounted for again")
            self._last = current
        return list(found.values())

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            try:
                self.check()
            except Exception:  # the monitor must outlive its own bugs
                log.exception("health check failed")
