"""Retries, bounded by the request's deadline.

    policy = RetryPolicy(max_attempts=3)
    result = await call_with_retries(attempt, policy=policy, deadline=deadline, on_retry=report)

`attempt()` is awaited at most `max_attempts` times; each attempt's own timeout is set by the
attempt layer below. Retried: rate limits (waiting at least the provider's Retry-After), 5xx,
attempt timeouts and connection errors, with exponential
backoff and jitter. Never retried: 4xx, validation errors, cancellation. No attempt, and no
backoff sleep, starts unless it can finish within the deadline: when the time left cannot fit
another try, the call ends with `DeadlineExceeded` naming the last error.

The error that ends the call says what was tried, between its cause and its advice:
`kimi:... timed out: ...; 1 attempt, no time left in the 3 s budget (WORKFLOW_TOOL_TIMEOUT_SECS)
for another; raise KIMI_TIMEOUT_SECS ...`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio

from exai_mcp.errors import BreakerOpen, DeadlineExceeded, ProviderError, RateLimited
from exai_mcp.middleware.call import Call, Next
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.middleware.metrics import ProviderStats

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.5
    min_attempt: float = 1.0
    """The shortest time worth giving a retry; less left than this plus the backoff: stop."""
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    """How a backoff waits; tests pass a recorder instead of waiting for real."""


def is_retryable(exc: BaseException) -> bool:
    # Never true for CancelledError (or anything but a retryable ProviderError).
    return isinstance(exc, ProviderError) and exc.retryable


def backoff(policy: RetryPolicy, attempts: int) -> float:
    """Seconds to wait after `attempts` failed attempts: exponential with jitter, capped,

    initial_delay * 2**(attempts - 1) + uniform(0, jitter), at most max_delay (as tenacity's
    `wait_exponential_jitter(multiplier=initial_delay, max=max_delay, jitter=jitter)`, which
    this replaced so that serving does not import tenacity).
    """
    jitter = random.uniform(0, policy.jitter)
    try:
        delay = policy.initial_delay * 2 ** (attempts - 1) + jitter
    except OverflowError:
        delay = policy.max_delay
    return max(0.0, min(delay, policy.max_delay))


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    deadline: Deadline,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    budget_setting: str = "WORKFLOW_TOOL_TIMEOUT_SECS",
) -> T:
    attempts = 0
    out_of_time = False
    try:
        while True:
            attempts += 1
            try:
                return await attempt()
            except ProviderError as exc:
                if not exc.retryable or attempts >= policy.max_attempts:
                    raise
                delay = backoff(policy, attempts)
                if isinstance(exc, RateLimited) and exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                # No backoff sleep, and no attempt, that cannot finish within the deadline.
                out_of_time = delay + policy.min_attempt > deadline.remaining()
                if out_of_time:
                    raise
                if on_retry is not None:
                    on_retry(attempts, exc, delay)
            await policy.sleep(delay)
    except ProviderError as exc:
        if isinstance(exc, BreakerOpen):
            raise  # its message says why and when; no attempt reached the provider
        tried = _attempts(attempts)
        if not is_retryable(exc):
            tried = (
                "not retried: another attempt would fail the same way"
                if attempts == 1
                else f"{tried}, the last failing in a way no retry helps"
            )
        elif out_of_time:
            tried += (
                f", no time left in the {deadline.budget:g} s budget ({budget_setting}) for another"
            )
            raise DeadlineExceeded(str(exc.with_tried(tried))) from exc
        else:
            tried += f" (EXAI_MAX_ATTEMPTS={policy.max_attempts}), none succeeded"
        raise exc.with_tried(tried) from exc


def _attempts(count: int) -> str:
    return f"{count} attempt{'' if count == 1 else 's'}"


class RetryAttempts:
    """Layer: attempts (everything below it) are retried within the call's budget."""

    def __init__(self, policy: RetryPolicy, stats: Mapping[str, ProviderStats]) -> None:
        self.policy = policy
        self.stats = stats

    async def __call__(self, call: Call, call_next: Next) -> object:
        stats = self.stats[call.provider]
        label = call.model.label if call.model else call.provider

        def on_retry(attempt_number: int, exc: BaseException, delay: float) -> None:
            stats.record_retry(exc)
            call.report(
                f"{label}: attempt {attempt_number} failed ({exc}); retrying in {delay:.1f} s"
            )

        return await call_with_retries(
            lambda: call_next(call),
            policy=self.policy,
            deadline=call.deadline,
            on_retry=on_retry,
            budget_setting=call.ask.budget_setting,
        )
