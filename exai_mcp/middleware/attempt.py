"""The innermost layer: one provider request, under its attempt timeout.

The attempt gets min(the provider's attempt timeout, what is left of the call's budget),
counted from when it holds its permits. Running out of it is a `ProviderTimeout`, which the
breaker above counts and the retry layer may retry; cancellation closes the HTTP request so the
provider stops working on it. The timeout message names whichever of the two limits applied.
"""

from __future__ import annotations

import time

import anyio

from exai_mcp.errors import DeadlineExceeded, ProviderError, ProviderTimeout
from exai_mcp.middleware.call import Call, Next
from exai_mcp.middleware.pool import ProviderPool
from exai_mcp.providers.base import ChatResult
from exai_mcp.providers.registry import SPECS


class CallProvider:
    def __init__(self, pool: ProviderPool) -> None:
        self.pool = pool

    async def __call__(self, call: Call, call_next: Next) -> ChatResult:
        assert call.model is not None and call.chat is not None, "routing and prompt come first"
        name = call.model.provider
        label = call.model.label
        stats = self.pool.stats[name]
        own = self.pool.attempt_timeouts[name]
        left = call.deadline.remaining()
        timeout = min(own, left)
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
                except ProviderTimeout:
                    pass  # the SDK's clock ran out with ours: one message for both, below
                except ProviderError as exc:
                    status = exc.kind
                    raise
                except anyio.get_cancelled_exc_class():
                    status = "cancelled"  # or, if the attempt timeout fired, a timeout below
                    raise
                else:
                    status = "ok"
                    return result
            status = ProviderTimeout.kind
            raise self._timed_out(call, own, left, timeout)
        finally:
            stats.record_request(
                call.model.id,
                status,
                time.monotonic() - started,
                input_tokens=result.prompt_tokens if result else 0,
                output_tokens=result.completion_tokens if result else 0,
            )

    @staticmethod
    def _timed_out(call: Call, own: float, left: float, timeout: float) -> ProviderTimeout:
        """Which limit ran out, the provider's attempt timeout or the call's budget, and what
        to change."""
        assert call.model is not None
        name, label = call.model.provider, call.model.label
        timeout_variable = SPECS[name].timeout_variable if name in SPECS else "the attempt timeout"
        if own <= left:
            limit = f"no answer within {timeout:.1f} s ({timeout_variable})"
            advice = f"raise {timeout_variable} (at most WORKFLOW_TOOL_TIMEOUT_SECS), or send less"
        else:
            setting = call.ask.budget_setting
            limit = (
                f"no answer within the {timeout:.1f} s left of the {call.deadline.budget:g} s "
                f"budget ({setting})"
            )
            advice = f"raise {setting}, or send less"
        return ProviderTimeout(
            f"{label} timed out: {limit}", provider=name, model=call.model.id, advice=advice
        )
