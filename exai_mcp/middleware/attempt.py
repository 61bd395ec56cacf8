"""The innermost layer: one provider request, under its attempt timeout.

The attempt gets min(the provider's attempt timeout, what is left of the call's budget),
counted from when it holds its permits. Running out of it is a `ProviderTimeout`, which the
breaker above counts and the retry layer may retry; cancellation closes the HTTP request so the
provider stops working on it.
"""

from __future__ import annotations

import time

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

        call.report(f"calling {label}")
        started = time.monotonic()
        status, result = "error", None
        try:
            with anyio.move_on_after(timeout):
                try:
                    result = await self.pool.providers[name].complete(
                        call.chat, timeout=timeout, on_tokens=on_tokens
                    )
                except ProviderError as exc:
                    status = exc.kind
                    raise
                except anyio.get_cancelled_exc_class():
                    status = "cancelled"  # or, if the attempt timeout fired, a timeout below
                    raise
                status = "ok"
                return result
            status = ProviderTimeout.kind
            raise ProviderTimeout(
                f"{label} did not finish within {timeout:.1f} s", provider=name, model=call.model.id
            )
        finally:
            stats.record_request(
                call.model.id,
                status,
                time.monotonic() - started,
                input_tokens=result.prompt_tokens if result else 0,
                output_tokens=result.completion_tokens if result else 0,
            )
