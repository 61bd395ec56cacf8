"""A per-provider circuit breaker: stop calling a provider that keeps failing, then probe it.

    breaker = CircuitBreaker("kimi", failures=5, cooldown=30)
    async with breaker.guard():        # raises BreakerOpen at once while the provider is open
        result = await call_provider()

The pipeline checks it before every attempt, not once per call, and counts every failed
attempt: after `failures` consecutive ones (timeouts, 5xx, malformed replies, unreachable
hosts; not 4xx, not rate limits, not cancellation) it opens for `cooldown` seconds. A rejected
key (HTTP 401/403) opens it at once: the provider cannot serve us until the key changes, which
takes a restart, or the cooldown passes. Then one probe attempt is let through: success closes
it, failure opens it again. `available()` lets `model=auto` route around an open provider.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum

from exai_mcp.errors import AuthRejected, BreakerOpen, ProviderError, RateLimited
from exai_mcp.middleware.call import Call, Next


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
        "_reason",
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
        self._reason = ""
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
            if isinstance(exc, AuthRejected):
                self._record_failure(f"its API key was rejected: {exc}", at_once=True)
            elif counts_as_failure(exc):
                self._record_failure(f"{self._consecutive + 1} consecutive failures, last: {exc}")
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
            f"{self.name} is paused ({self._reason}); it will be tried again {when}. Use "
            "model=auto or a model of another provider meanwhile.",
            provider=self.name,
        )

    def _record_success(self) -> None:
        self._reason = ""
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def _record_failure(self, reason: str, *, at_once: bool = False) -> None:
        self._consecutive += 1
        if at_once or self._probing or self._consecutive >= self.failures:
            self._reason = reason
            if self._opened_at is None or self._probing:
                self.times_opened += 1
            self._opened_at = self._clock()
        self._probing = False

    def stats(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self._consecutive,
            "times_opened": self.times_opened,
            "reason": self._reason,
        }


class CheckBreaker:
    """Layer, before every attempt: a paused provider fails at once, and every failed
    attempt counts, including the timeout that used up the call's budget."""

    def __init__(self, breakers: dict[str, CircuitBreaker]) -> None:
        self.breakers = breakers

    async def __call__(self, call: Call, call_next: Next) -> object:
        async with self.breakers[call.provider].guard():
            return await call_next(call)
