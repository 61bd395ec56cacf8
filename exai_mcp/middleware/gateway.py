"""The path every provider call takes: circuit breaker, provider limit, retries, attempt timeout.

    result = await gateway.complete(request, model, call, budget=timeouts.tool)

The budget (the tool's timeout, or EXPERT_ANALYSIS_TIMEOUT_SECS) is cut to what is left of the
request's deadline; each attempt gets min(provider attempt timeout, budget left).
"""

from __future__ import annotations

from collections.abc import Mapping

from exai_mcp.errors import ProviderError
from exai_mcp.middleware.breaker import CircuitBreaker
from exai_mcp.middleware.context import CallContext
from exai_mcp.middleware.limits import Holder, TrackedLimiter
from exai_mcp.middleware.metrics import ProviderStats
from exai_mcp.middleware.retry import RetryPolicy, call_with_retries
from exai_mcp.providers.base import ChatRequest, ChatResult, Provider
from exai_mcp.providers.catalog import ResolvedModel


class ProviderGateway:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        limits: Mapping[str, TrackedLimiter],
        breakers: Mapping[str, CircuitBreaker],
        attempt_timeouts: Mapping[str, float],
        policy: RetryPolicy,
    ) -> None:
        self.providers = dict(providers)
        self.limits = dict(limits)
        self.breakers = dict(breakers)
        self.attempt_timeouts = dict(attempt_timeouts)
        self.policy = policy
        self.stats = {name: ProviderStats() for name in self.providers}

    def available(self, provider: str) -> bool:
        breaker = self.breakers.get(provider)
        return breaker is None or breaker.available()

    async def complete(
        self, request: ChatRequest, model: ResolvedModel, call: CallContext, *, budget: float
    ) -> ChatResult:
        name = model.provider
        provider = self.providers[name]
        stats = self.stats[name]
        deadline = call.deadline.within(budget)
        label = model.label

        def on_tokens(count: int, thinking: bool) -> None:
            tokens = f"{count} token{'' if count == 1 else 's'}"
            call.report(
                f"{label} is thinking: {tokens} of reasoning so far"
                if thinking
                else f"{label}: {tokens} received"
            )

        async def attempt(timeout: float) -> ChatResult:
            stats.requests += 1
            call.report(f"calling {label}")
            try:
                result = await provider.complete(request, timeout=timeout, on_tokens=on_tokens)
            except ProviderError as exc:
                stats.errors[exc.kind] += 1
                raise
            stats.successes += 1
            return result

        def on_retry(attempt_number: int, exc: BaseException, delay: float) -> None:
            stats.retries += 1
            call.report(
                f"{label}: attempt {attempt_number} failed ({exc}); retrying in {delay:.1f} s"
            )

        holder = Holder(call.request_id, call.tool, name)
        # The breaker comes first: a paused provider fails at once, without queueing for a permit.
        async with (
            self.breakers[name].guard(),
            self.limits[name].hold(holder, deadline, on_wait=call.report),
        ):
            return await call_with_retries(
                attempt,
                policy=self.policy,
                deadline=deadline,
                attempt_timeout=self.attempt_timeouts[name],
                on_retry=on_retry,
                what=label,
            )
