"""The innermost layer: one provider request, under its attempt timeout.

The attempt gets min(the provider's attempt timeout, what is left of the call's budget),
counted from when it holds its permits. Running out of it is a `ProviderTimeout`, which the
breaker above counts and the retry layer may retry; cancellation closes the HTTP request so the
provider stops working on it.
"""

from __future__ import annotations

import anyio

from exai_mcp.errors import DeadlineExceeded, ProviderError, ProviderTimeout
from exai_mcp.middleware.call import Call, Next
from exai_mcp.middleware.pool import ProviderPool
from exai_mcp.providers.base import ChatResult


class CallProvider:
    def __init__(self, pool: ProviderPool) -> None:
        self.pool = pool

    async def __call__(self, call: Call, call_next: Next) -> ChatResult:
        assert call.model is not None and call.chat is not None, "routing and prompt come first"
        name = call.model.provider
        label = call.model.label
        stats = self.pool.stats[name]
        timeout = min(self.pool.attempt_timeouts[name], call.deadline.remaining())
        if timeout <= 0:
            raise DeadlineExceeded(
                "the request's budget ran out before the provider could be called"
            )

        def on_tokens(count: int, thinking: bool) -> None:
            tokens = f"{count} token{'' if count == 1 else 's'}"
            call.report(
                f"{label} is thinking: {tokens} of reasoning so far"
                if thinking
                else f"{label}: {tokens} received"
            )

        stats.requests += 1
        call.report(f"calling {label}")
        with anyio.move_on_after(timeout):
            try:
                result = await self.pool.providers[name].complete(
                    call.chat, timeout=timeout, on_tokens=on_tokens
                )
            except ProviderError as exc:
                stats.errors[exc.kind] += 1
                raise
            stats.successes += 1
            return result
        stats.errors[ProviderTimeout.kind] += 1
        raise ProviderTimeout(
            f"{label} did not finish within {timeout:.1f} s", provider=name, model=call.model.id
        )
