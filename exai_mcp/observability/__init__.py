"""Seeing inside the server: Prometheus metrics, OpenTelemetry traces, JSON logs.

metrics.py    the collector /metrics reads (the counters live where events happen)
endpoint.py   GET /metrics, and its loopback server for stdio mode (EXAI_METRICS_PORT)
layers.py     pipeline wrappers: the call's record, spans, permit waits, the call log line
context.py    the per-call record those layers fill in
tracing.py    the tracing interface, and the do-nothing tracer (tracing off)
otel.py       OpenTelemetry behind it; imported only when OTEL_EXPORTER_OTLP_ENDPOINT is set
logs.py       the JSON line formatter (EXAI_LOG_FORMAT=json)
"""
