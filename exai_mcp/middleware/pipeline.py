"""The one place a tool call's journey is assembled: the list in `Pipeline.__init__`, read top
to bottom, is the path from the client's request to the provider's HTTP request.

Each layer is `async (call, call_next)` and does one job around `await call_next(call)`.
Adding a layer is one module and one line in the list. Above `ShareIdenticalCalls` a layer
works for one caller; below it, for the one execution that identical callers share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from exai_mcp.files import FileAccessPolicy
from exai_mcp.middleware.attempt import CallProvider
from exai_mcp.middleware.breaker import CheckBreaker
from exai_mcp.middleware.cache import AnswerCache, KeepInCache, ServeFromCache
from exai_mcp.middleware.call import Answer, Call, Layer, Next, Plan
from exai_mcp.middleware.clients import ClientLimit, ClientLimits
from exai_mcp.middleware.deadline import Deadline, EnforceDeadline, ProviderBudget
from exai_mcp.middleware.limits import GlobalLimit, Limiter, ProviderLimit
from exai_mcp.middleware.metrics import CallStats, CountCalls
from exai_mcp.middleware.pool import ProviderPool
from exai_mcp.middleware.progress import ReportProgress, SendProgress
from exai_mcp.middleware.prompt import BuildPrompt
from exai_mcp.middleware.quota import EnforceQuota, ProviderQuota
from exai_mcp.middleware.retry import RetryAttempts, RetryPolicy
from exai_mcp.middleware.routing import RouteToProvider
from exai_mcp.middleware.singleflight import (
    ServerFlights,
    ShareAcrossServers,
    ShareIdenticalCalls,
    SingleFlight,
)
from exai_mcp.middleware.tool import RunTool
from exai_mcp.observability.layers import (
    Observability,
    ObserveAttempts,
    ObserveCacheLookup,
    ObserveCall,
    ObservePermitWait,
    ObserveRequest,
    ObserveSharing,
)
from exai_mcp.providers.catalog import ModelCatalog
from exai_mcp.redact import Redactor


def compose(layers: Sequence[Layer]) -> Next:
    """The layers as one handler: each one's `call_next` is the rest of the list."""

    async def end(_call: Call) -> Any:
        raise AssertionError("the last layer answers without calling call_next")

    handler: Next = end
    for layer in reversed(layers):
        handler = partial(layer, call_next=handler)
    return handler


class Pipeline:
    def __init__(
        self,
        *,
        server_deadline: float,
        cache: AnswerCache,
        flights: SingleFlight[Answer],
        global_limit: Limiter,
        client_limits: ClientLimits,
        pool: ProviderPool,
        catalog: ModelCatalog,
        files: FileAccessPolicy,
        policy: RetryPolicy,
        max_output_tokens: int,
        progress_interval: float,
        redactor: Redactor,
        observability: Observability | None = None,
        across: ServerFlights | None = None,
        quotas: Mapping[str, ProviderQuota] | None = None,
    ) -> None:
        self.server_deadline = server_deadline
        self.cache = cache
        self.flights = flights
        self.global_limit = global_limit
        self.client_limits = client_limits
        self.calls = CallStats()
        obs = self.observability = observability or Observability()
        limits = dict(pool.limits)
        self.layers: list[Layer] = [
            ReportProgress(progress_interval),  # this caller's progress, if it asked
            EnforceDeadline(),  # this caller's deadline, from its arrival
            ObserveCall(obs),  # the caller's record, span and log line (observability/)
            CountCalls(self.calls),  # outcome and latency, whatever happens below
            RunTool(),  # plan the call; finish it for this caller (its own thread)
            ObserveCacheLookup(obs, ServeFromCache(cache)),  # a known answer costs nothing
            ClientLimit(client_limits),  # a busy client queues behind itself...
            ServeFromCache(cache, after_queueing=True),  # ...and then looks again
            ObserveSharing(obs, ShareIdenticalCalls(flights)),  # one execution; shared below
            KeepInCache(cache),  # kept even if every caller left meanwhile
            ShareAcrossServers(across),  # with Redis: one execution on all servers
            ProviderBudget(),  # the tool's budget within the latest waiter's deadline
            RouteToProvider(pool, catalog, min_attempt=policy.min_attempt),  # auto fails over
            BuildPrompt(files, max_output_tokens=max_output_tokens, redactor=redactor),  # window
            ObserveAttempts(obs, RetryAttempts(policy, pool.stats)),  # retried in budget
            CheckBreaker(pool.breakers),  # before every attempt; every failure counts
            EnforceQuota(quotas or {}),  # EXAI_<P>_RPM / _TPM, waiting within the deadline
            # The provider's permit first, then the global one: held only while running.
            ObservePermitWait(obs, ProviderLimit(limits), lambda c: limits[c.provider]),
            ObservePermitWait(obs, GlobalLimit(global_limit), lambda _c: global_limit),
            ObserveRequest(CallProvider(pool)),  # one HTTP request under the attempt timeout
        ]
        self._handle = compose(self.layers)

    async def run(
        self,
        tool: str,
        request_id: str,
        prepare: Callable[[], Awaitable[Plan[Any]]],
        *,
        send_progress: SendProgress | None = None,
        deadline: Deadline | None = None,
        client: str = "stdio",
    ) -> Any:
        """Run one call within its deadline (counted from `deadline`'s start: the arrival)."""
        call = Call(
            tool=tool,
            request_id=request_id,
            deadline=deadline or Deadline.after(self.server_deadline),
            prepare=prepare,
            send_progress=send_progress,
            client=client,
        )
        return await self._handle(call)

    def stats(self) -> dict[str, object]:
        snapshot = self.calls.snapshot()
        snapshot["cache_hits"] = self.cache.hits
        snapshot["coalesced_waiters"] = self.flights.coalesced
        snapshot["abandoned_after_grace"] = self.flights.grace_cancellations
        return snapshot
