"""Layers that watch the pipeline: spans, the per-call record, permit waits, the call log line.

Each wraps one existing layer (or stands alone) and changes nothing about what it does:

    ObserveCall(obs)                          the call's record, its span, its JSON log line
    ObserveCacheLookup(obs, ServeFromCache)   span: the lookup, hit or miss
    ObserveSharing(obs, ShareIdenticalCalls)  span: leader or joined (linked to the leader)
    ObserveAttempts(obs, RetryAttempts)       span per attempt: model, attempt number, tokens
    ObservePermitWait(obs, ProviderLimit)     histogram + span: time waited, queue position
    ObserveRequest(CallProvider)              the record's provider requests and tokens

A wrapper sees when the layer it wraps hands the call on (it intercepts `call_next`), which
is when a lookup missed or a permit was granted. With tracing off each wrapper does one
attribute check before doing its layer's work; the metrics are always on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exai_mcp.middleware.call import Call, Layer, Next
from exai_mcp.middleware.limits import TrackedLimiter
from exai_mcp.middleware.metrics import LimitWaits, outcome_of
from exai_mcp.observability.context import CallRecord, current_call
from exai_mcp.observability.tracing import NO_TRACING, Span, Tracing

log = logging.getLogger("exai_mcp.calls")


@dataclass(frozen=True, slots=True)
class Observability:
    """What the watching layers share: built once per server from the settings."""

    tracing: Tracing = NO_TRACING
    log_calls: bool = False
    """One structured line per finished call (EXAI_LOG_FORMAT=json)."""
    limit_waits: LimitWaits = field(default_factory=LimitWaits)


class ObserveCall:
    """Layer, above everything that may fail: the caller's record, root span and log line."""

    def __init__(self, obs: Observability) -> None:
        self.obs = obs

    async def __call__(self, call: Call, call_next: Next) -> Any:
        record = CallRecord(call.tool, call.request_id, call.client)
        token = current_call.set(record)
        result: Any = None
        error: BaseException | None = None
        try:
            if not self.obs.tracing.enabled:
                result = await call_next(call)
            else:
                result = await self._traced(call, call_next, record)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            current_call.reset(token)
            if self.obs.log_calls:
                self._log(call, record, outcome_of(result, error), error)

    async def _traced(self, call: Call, call_next: Next, record: CallRecord) -> Any:
        tracing = self.obs.tracing
        span = tracing.active()  # the SDK's `tools/call` span, for an MCP request
        if span is not None:
            return await self._within(span, call, call_next, record)
        # REST has no SDK span: this call's span is the root, named as the SDK names its own.
        with tracing.span(
            f"tools/call {call.tool}",
            kind="server",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.tool},
        ) as root:
            return await self._within(root, call, call_next, record)

    async def _within(self, span: Span, call: Call, call_next: Next, record: CallRecord) -> Any:
        span.set("exai.request_id", call.request_id)
        span.set("exai.client", call.client)
        record.trace_id = self.obs.tracing.trace_id()
        result = None
        try:
            result = await call_next(call)
            return result
        finally:
            span.set("exai.cached", bool(getattr(result, "cached", False)))
            span.set("exai.coalesced", record.coalesced)
            span.set("exai.provider_requests", record.provider_requests)

    def _log(
        self, call: Call, record: CallRecord, outcome: str, error: BaseException | None
    ) -> None:
        fields = {
            "duration_ms": round(call.deadline.elapsed() * 1000, 1),
            "outcome": outcome,
            "cached": outcome == "cached",
            "coalesced": record.coalesced,
            "provider_requests": record.provider_requests,
            "retries": record.retries,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
        }
        if error is not None and outcome == "error":
            fields["error"] = getattr(error, "kind", type(error).__name__)
        log.info(
            "call finished",
            extra={
                "exai": fields,
                "tool": call.tool,
                "request_id": call.request_id,
                "client": call.client,
                "trace_id": record.trace_id,
            },
        )


class ObserveCacheLookup:
    def __init__(self, obs: Observability, layer: Layer) -> None:
        self.obs = obs
        self.layer = layer

    async def __call__(self, call: Call, call_next: Next) -> Any:
        if not self.obs.tracing.enabled or call.key is None:
            return await self.layer(call, call_next)
        span = self.obs.tracing.start("exai.cache_lookup")
        missed = False

        async def on_miss(c: Call) -> Any:
            nonlocal missed
            missed = True
            span.set("exai.cache.hit", False)
            span.end()
            return await call_next(c)

        try:
            result = await self.layer(call, on_miss)
        except BaseException as exc:
            span.end(exc)  # nothing if the miss ended it
            raise
        if not missed:
            span.set("exai.cache.hit", True)
            span.end()
        return result


class ObserveSharing:
    """Wraps ShareIdenticalCalls: marks who led an execution, and traces the wait for it.

    The leader's span is current while the execution starts, so the execution's spans (its
    attempts) are the leader's children; a joined caller's span links to the leader's.
    """

    def __init__(self, obs: Observability, layer: Layer) -> None:
        self.obs = obs
        self.layer = layer
        self._leaders: dict[str, tuple[object]] = {}
        """Key -> (the link to the span of the caller whose execution is running,)."""

    async def __call__(self, call: Call, call_next: Next) -> Any:
        key = call.key
        record = current_call.get()
        if key is None or record is None:
            return await self.layer(call, call_next)
        record.shared = True
        tracing = self.obs.tracing
        leaders = self._leaders

        async def execution(shared_call: Call) -> Any:
            # In the execution's task, whose context was copied from its leader's.
            leader = current_call.get()
            if leader is not None:
                leader.led = True
            if not tracing.enabled:
                return await call_next(shared_call)
            span = tracing.active()
            mark = leaders[key] = (None if span is None else span.link,)  # unique per run
            try:
                return await call_next(shared_call)
            finally:
                if leaders.get(key) is mark:
                    del leaders[key]

        if not tracing.enabled:
            return await self.layer(call, execution)
        running = leaders.get(key)
        links = () if running is None or running[0] is None else (running[0],)
        with tracing.span("exai.singleflight", links=links) as span:
            try:
                return await self.layer(call, execution)
            finally:
                span.set("exai.singleflight.role", "joined" if record.coalesced else "leader")


class ObserveAttempts:
    """Wraps RetryAttempts: one span per attempt, current while it runs, so the provider
    request carries its `traceparent` and the permit waits are its children."""

    def __init__(self, obs: Observability, layer: Layer) -> None:
        self.obs = obs
        self.layer = layer

    async def __call__(self, call: Call, call_next: Next) -> Any:
        attempts = 0
        record = current_call.get()
        tracing = self.obs.tracing

        async def attempt(c: Call) -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and record is not None:
                record.retries += 1
            if not tracing.enabled:
                return await call_next(c)
            model = c.model.id if c.model else ""
            with tracing.span(
                f"chat {model}",
                kind="client",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": c.provider,
                    "gen_ai.request.model": model,
                    "exai.attempt": attempts,
                },
            ) as span:
                result = await call_next(c)
                span.set("gen_ai.response.model", getattr(result, "model", model))
                span.set("gen_ai.usage.input_tokens", getattr(result, "prompt_tokens", 0))
                span.set("gen_ai.usage.output_tokens", getattr(result, "completion_tokens", 0))
                span.set("http.response.status_code", 200)
                return result

        return await self.layer(call, attempt)


class ObservePermitWait:
    """Wraps a limit layer: how long the attempt waited for its permit (histogram, span)."""

    def __init__(
        self, obs: Observability, layer: Layer, limiter: Callable[[Call], TrackedLimiter]
    ) -> None:
        self.obs = obs
        self.layer = layer
        self.limiter = limiter

    async def __call__(self, call: Call, call_next: Next) -> Any:
        limiter = self.limiter(call)
        started = time.monotonic()
        span: Span | None = None
        if self.obs.tracing.enabled:
            full = limiter.in_use() >= limiter.total
            span = self.obs.tracing.start(
                "exai.permit_wait",
                attributes={
                    "exai.limit": limiter.name,
                    "exai.queue.ahead": limiter.waiting() if full else 0,
                },
            )
        granted = False

        def waited() -> None:
            seconds = time.monotonic() - started
            self.obs.limit_waits.observe(limiter.name, seconds)
            if span is not None:
                span.set("exai.wait_seconds", round(seconds, 6))

        async def with_permit(c: Call) -> Any:
            nonlocal granted
            granted = True
            waited()
            if span is not None:
                span.end()
            return await call_next(c)

        try:
            return await self.layer(call, with_permit)
        except BaseException as exc:
            if not granted:  # refused (busy) or cancelled while waiting: still a wait
                waited()
                if span is not None:
                    span.end(exc)
            raise


class ObserveRequest:
    """Wraps CallProvider: the caller's record counts the requests and tokens it caused."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer

    async def __call__(self, call: Call, call_next: Next) -> Any:
        record = current_call.get()
        if record is not None:
            record.provider_requests += 1
        result = await self.layer(call, call_next)
        if record is not None:
            record.input_tokens += getattr(result, "prompt_tokens", 0)
            record.output_tokens += getattr(result, "completion_tokens", 0)
        return result
