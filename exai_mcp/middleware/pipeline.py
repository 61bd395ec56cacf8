"""The one place a tool call's journey is assembled, outermost layer first:

    deadline  ->  result cache  ->  single-flight  ->  global limit  ->  tool
                                                          (tool -> gateway: breaker -> provider
                                                           limit -> retries -> attempt timeout)

Every tool that does work goes through `Pipeline.run`; adding a layer is one module and one
line here. Progress for the request is reported throughout and stops before the result is
returned.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from exai_mcp.middleware.cache import ResultCache
from exai_mcp.middleware.context import CallContext, Prepared
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.middleware.limits import Holder, TrackedLimiter
from exai_mcp.middleware.metrics import CallStats
from exai_mcp.middleware.progress import ProgressReporter, SendProgress
from exai_mcp.middleware.singleflight import Flight, SingleFlight

Out = TypeVar("Out", bound=BaseModel)


def call_key(tool: str, material: dict[str, Any]) -> str:
    """sha256 of canonical JSON: key order and whitespace in the client's JSON do not matter."""
    canonical = json.dumps(
        {"tool": tool, **material}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Pipeline:
    def __init__(
        self,
        *,
        server_deadline: float,
        cache: ResultCache[BaseModel],
        flights: SingleFlight[BaseModel],
        global_limit: TrackedLimiter,
        progress_interval: float,
    ) -> None:
        self.server_deadline = server_deadline
        self.cache = cache
        self.flights = flights
        self.global_limit = global_limit
        self.progress_interval = progress_interval
        self.calls = CallStats()

    async def run(
        self,
        tool: str,
        request_id: str,
        prepare: Callable[[CallContext], Awaitable[Prepared[Out]]],
        *,
        send_progress: SendProgress | None = None,
        deadline: Deadline | None = None,
    ) -> Out:
        """Run one call within its deadline (counted from `deadline`'s start: the arrival)."""
        deadline = deadline or Deadline.after(self.server_deadline)
        reporter = ProgressReporter(send_progress, self.progress_interval)
        ok = False
        try:
            async with reporter.running():
                with deadline.enforce(f"the {tool} request"):
                    call = CallContext(request_id, tool, deadline, reporter.update)
                    result = await self._run(call, await prepare(call))
            ok = True
            return result
        finally:
            self.calls.record(deadline.elapsed(), ok=ok)

    async def _run(self, call: CallContext, prepared: Prepared[Out]) -> Out:
        if prepared.key is None:
            return await self._limited(call, prepared)
        key = call_key(call.tool, prepared.key)
        hit = self.cache.get(key)
        if hit is not None:
            self.calls.cache_hits += 1
            return hit.model_copy(update={"cached": True})  # type: ignore[return-value]

        async def shared(flight: Flight[BaseModel]) -> BaseModel:
            # The execution reports to every waiter and runs to the first caller's deadline.
            shared_call = CallContext(call.request_id, call.tool, flight.deadline, flight.report)
            result = await self._limited(shared_call, prepared)
            self.cache.put(key, result)
            return result

        return await self.flights.run(  # type: ignore[return-value]
            key, shared, deadline=call.deadline, progress=call.report
        )

    async def _limited(self, call: CallContext, prepared: Prepared[Out]) -> Out:
        holder = Holder(call.request_id, call.tool, None)
        async with self.global_limit.hold(holder, call.deadline, on_wait=call.report):
            return await prepared.execute(call)

    def stats(self) -> dict[str, object]:
        snapshot = self.calls.snapshot()
        snapshot["coalesced_waiters"] = self.flights.coalesced
        snapshot["abandoned_after_grace"] = self.flights.grace_cancellations
        return snapshot
