"""A per-provider circuit breaker: stop calling a provider that keeps failing, then probe it.

    breaker = CircuitBreaker("kimi", failures=5, cooldown=30)
    async with breaker.guard():        # raises BreakerOpen at once while the provider is open
        result = await call_provider()

After `failures` consecutive failures (5xx, timeouts, connection errors; not 4xx, not rate
limits, not cancellation) the breaker opens for `cooldown` seconds. Then one probe call is let
through: success closes it, failure opens it again. `available()` lets `model=auto` route
around an open provider.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum

from exai_mcp.errors import BreakerOpen, ProviderError, RateLimited


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def counts_as_failure(exc: BaseException) -> bool:
    """Failures that say the provider is unhealthy, not that the request or quota is wrong."""
    return isinstance(exc, ProviderError) and exc.retryable and not isinstance(exc, RateLimited)


class CircuitBreaker:
    __slots__ = (
        "_clock",
        "_consecutive",
        "_opened_at",
        "_probing",
        "cooldown",
        "failures",
        "name",
        "times_opened",
    )

    def __init__(
        self,
        name: str,
        *,
        failures: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def available(self) -> bool:
        """True when a call would be let through now (closed, or ready for its probe)."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probing
        )

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        probe = self._admit()
        try:
            yield
        except BaseException as exc:
            if counts_as_failure(exc):
                self._record_failure()
            elif probe:
                self._probing = False  # inconclusive (cancelled, 4xx): let the next call probe
            raise
        else:
            self._record_success()

    def _admit(self) -> bool:
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        retry_in = max(0.0, (self._opened_at or 0) + self.cooldown - self._clock())
        when = f"in {retry_in:.0f} s" if state is BreakerState.OPEN else "when the probe call ends"
        raise BreakerOpen(
            f"{self.name} is failing ({self._consecutive} consecutive failures) and is paused: it "
            f"will be tried again {when}. Use model=auto or a model of another provider meanwhile.",
            provider=self.name,
        )

    def _record_success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def _record_failure(self) -> None:
        self._consecutive += 1
        if self._probing or self._consecutive >= self.failures:
            if self._opened_at is None or self._probing:
                self.times_opened += 1
            self._opened_at = self._clock()
        self._probing = False

    def stats(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self._consecutive,
            "times_opened": self.times_opened,
        }
