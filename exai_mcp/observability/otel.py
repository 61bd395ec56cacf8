"""OpenTelemetry behind the `Tracing` interface; imported only when tracing is turned on.

`install()` sets up the SDK once per process: a tracer provider with a batching OTLP
(http/protobuf) exporter, which reads `OTEL_EXPORTER_OTLP_ENDPOINT` (and the other standard
`OTEL_*` variables) itself. A provider an embedding program or a test installed first is used
as it is. The MCP SDK's own middleware then makes every inbound request a span, continuing
the trace context in the request's `_meta`; the pipeline's spans are its children.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from exai_mcp.observability.tracing import Attributes, Span

EXIT_FLUSH_SECS = 1.0

KINDS = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
}


class OtelSpan:
    __slots__ = ("_ended", "_span")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._ended = False

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if error is not None:
            self._fail(error)
        self._span.end()

    def _fail(self, error: BaseException) -> None:
        self._span.set_attribute("error.type", getattr(error, "kind", type(error).__name__))
        self._span.set_status(Status(StatusCode.ERROR, str(error)[:200]))

    @property
    def link(self) -> object:
        return self._span.get_span_context()


class OtelTracing:
    enabled = True

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    @contextmanager
    def span(
        self,
        name: str,
        *,
        kind: str = "internal",
        attributes: Attributes | None = None,
        links: Sequence[object] = (),
    ) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            name,
            kind=KINDS[kind],
            attributes=attributes,
            links=[Link(c) for c in links if isinstance(c, trace.SpanContext)],
            record_exception=False,
            set_status_on_exception=False,
            end_on_exit=False,
        ) as raw:
            span = OtelSpan(raw)
            try:
                yield span
            except BaseException as exc:
                span.end(exc)
                raise
            span.end()

    def start(self, name: str, *, attributes: Attributes | None = None) -> Span:
        return OtelSpan(self._tracer.start_span(name, attributes=attributes))

    def active(self) -> Span | None:
        span = trace.get_current_span()
        return OtelSpan(span) if span.is_recording() else None

    def headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier

    def trace_id(self) -> str | None:
        context = trace.get_current_span().get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None


def install(*, version: str = "") -> OtelTracing:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(
            resource=Resource.create({"service.name": "exai-mcp", "service.version": version}),
            shutdown_on_exit=False,  # see _flush_at_exit
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        atexit.register(_flush_at_exit, provider, EXIT_FLUSH_SECS)
    return OtelTracing(provider.get_tracer("exai_mcp", version))


def _flush_at_exit(provider: TracerProvider, seconds: float) -> None:
    """Send the spans still queued, for `seconds` at most: the SDK's own exit hook waits out
    the exporter's timeout and retries (7-10 s against a dead collector), and an MCP client
    kills a server that takes over about 2 s to exit."""
    flush = threading.Thread(target=provider.shutdown, name="otel-exit-flush", daemon=True)
    flush.start()
    flush.join(seconds)
