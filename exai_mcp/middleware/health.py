"""A background check that every permit has a live holder and no holder is stuck.

    monitor = HealthMonitor(limiters, stuck_after=server_deadline, interval=30)
    task_group.start_soon(monitor.run)

Each round compares, for every limiter, the permits in use with the holders it knows; a holder
older than the server deadline is reported as stuck (WARNING on stderr with request id, tool and
age). It only reports: it never releases a permit it does not own (the holder's own `async with`
does that). It logs only when something is wrong or changes, never an all-is-well line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio

from exai_mcp.middleware.limits import TrackedLimiter

log = logging.getLogger("exai_mcp.health")


class HealthMonitor:
    __slots__ = ("_last", "interval", "limiters", "stuck_after")

    def __init__(
        self, limiters: Sequence[TrackedLimiter], *, stuck_after: float, interval: float
    ) -> None:
        self.limiters = list(limiters)
        self.stuck_after = stuck_after
        self.interval = interval
        self._last: frozenset[str] = frozenset()

    def check(self) -> list[str]:
        """One round: the problems found now (also logged when they differ from last round)."""
        problems: list[str] = []
        for limiter in self.limiters:
            holders = limiter.holders()
            if limiter.in_use() != len(holders) or limiter.borrowers() != len(holders):
                problems.append(
                    f"limiter '{limiter.name}': {limiter.in_use()} permits in use but "
                    f"{len(holders)} known holders"
                )
            for h in holders:
                if h.age() > self.stuck_after:
                    problems.append(
                        f"limiter '{limiter.name}': request {h.request_id} ({h.tool}) has held a "
                        f"permit for {h.age():.0f} s, past the {self.stuck_after:g} s deadline"
                    )
        current = frozenset(p.split(" for ")[0] for p in problems)
        if current != self._last:
            for p in problems:
                log.warning("health: %s", p)
            if not problems:
                log.info("health: all permits accounted for again")
            self._last = current
        return problems

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            try:
                self.check()
            except Exception:  # the monitor must outlive its own bugs
                log.exception("health check failed")
