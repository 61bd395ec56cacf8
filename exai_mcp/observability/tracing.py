"""The tracing interface the pipeline speaks, and the do-nothing tracer used when it is off.

    tracing = tracing_for(settings)        # NO_TRACING unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    if tracing.enabled:                    # the hot path asks this one question, nothing else
        with tracing.span("chat kimi-k2", kind="client", attributes={...}) as span: ...

OpenTelemetry (the `exai-mcp[otel]` extra) is imported only when tracing is turned on, by
`exai_mcp.observability.otel`; with it off, start-up loads nothing and a call pays one
attribute check per observing layer. The tracer is process-wide, as OpenTelemetry's is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

log = logging.getLogger("exai_mcp.tracing")

Attributes = Mapping[str, str | int | float | bool]


class Span(Protocol):
    def set(self, key: str, value: str | int | float | bool) -> None: ...

    def end(self, error: BaseException | None = None) -> None:
        """End the span (once; later calls do nothing), marking it failed if `error`."""

    @property
    def link(self) -> object:
        """What another span passes in `links` to point at this one."""


class Tracing(Protocol):
    enabled: bool

    def span(
        self,
        name: str,
        *,
        kind: str = "internal",
        attributes: Attributes | None = None,
        links: Sequence[object] = (),
    ) -> AbstractContextManager[Span]:
        """A span that is the current one inside the block (children and `headers` see it)."""

    def start(self, name: str, *, attributes: Attributes | None = None) -> Span:
        """A child of the current span that is not made current: a phase ended by `end()`."""

    def active(self) -> Span | None:
        """The current span if it records (the SDK's `tools/call` span), else None."""

    def headers(self) -> dict[str, str]:
        """W3C trace context (`traceparent`) for an outgoing request."""

    def trace_id(self) -> str | None: ...


class _NoSpan:
    __slots__ = ()

    def set(self, key: str, value: str | int | float | bool) -> None:
        pass

    def end(self, error: BaseException | None = None) -> None:
        pass

    @property
    def link(self) -> object:
        return None


class NoTracing:
    """Tracing off: every method is a constant, and `enabled` lets callers skip even those."""

    enabled = False
    _span = _NoSpan()

    @contextmanager
    def span(
        self,
        name: str,
        *,
        kind: str = "internal",
        attributes: Attributes | None = None,
        links: Sequence[object] = (),
    ) -> Iterator[Span]:
        yield self._span

    def start(self, name: str, *, attributes: Attributes | None = None) -> Span:
        return self._span

    def active(self) -> Span | None:
        return None

    def headers(self) -> dict[str, str]:
        return {}

    def trace_id(self) -> str | None:
        return None


NO_TRACING = NoTracing()
_current: Tracing = NO_TRACING


def tracing_for(endpoint: str | None, *, version: str = "") -> Tracing:
    """The process's tracer: OpenTelemetry when `endpoint` is set, installed once."""
    global _current
    if endpoint and not _current.enabled:
        try:
            from exai_mcp.observability.otel import install
        except ImportError as exc:
            log.warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed (%s): "
                "install exai-mcp[otel] to export traces; running without them",
                exc,
            )
            return NO_TRACING
        _current = install(version=version)
    return _current if endpoint else NO_TRACING


def current() -> Tracing:
    """The tracer installed in this process (NO_TRACING until one is)."""
    return _current


def outgoing_headers() -> dict[str, str] | None:
    """Trace context for a provider request, or None (nothing to add) with tracing off."""
    if not _current.enabled:
        return None
    return _current.headers() or None


def current_trace_id() -> str | None:
    return _current.trace_id() if _current.enabled else None
