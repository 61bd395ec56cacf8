"""OpenTelemetry traces: the span tree of a call, a coalesced call and a retried call.

An in-memory exporter stands in for the OTLP collector (an SDK tracer provider installed
first is the one the server uses); OTEL_EXPORTER_OTLP_ENDPOINT turns tracing on as in
production. The server is the real one over in-memory JSON-RPC, so the SDK's own
`tools/call` span, continued from the request's `_meta`, is the root.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_provider import FakeProvider, Reply
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from exai_mcp.observability import tracing
from tests.conftest import in_process_client, settings_for, wait_for_status
from tests.test_http import call_body, http_server

# One provider for the whole module: the MCP SDK's tracer binds to the first it sees.
EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The provider installed for this test only; tracing is off again after it."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", PROVIDER)
    monkeypatch.setattr(tracing, "_current", tracing.NO_TRACING)
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def traced_settings(fake: FakeProvider, tmp_path: Path, **extra: Any) -> Any:
    return settings_for(fake, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", **extra)


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_call_is_one_tree_continued_from_the_request_meta(
    fake: FakeProvider, tmp_path: Path, spans: InMemorySpanExporter
):
    async with in_process_client(traced_settings(fake, tmp_path)) as client:
        with anyio.fail_after(20), PROVIDER.get_tracer("test").start_as_current_span("client"):
            # The client sends its span's context in the request's _meta.
            result = await client.call_tool("analyze", {"text": "traced"})
    assert not result.is_error
    finished = spans.get_finished_spans()
    (outer,) = named(finished, "client")
    trace_id = format(outer.context.trace_id, "032x")
    (root,) = [s for s in named(finished, "tools/call analyze") if s.kind is trace.SpanKind.SERVER]
    assert format(root.context.trace_id, "032x") == trace_id  # continued, not a new trace
    assert root.parent is not None and root.parent.is_remote
    assert root.attributes["exai.provider_requests"] == 1

    (lookup,) = named(finished, "exai.cache_lookup")
    (sharing,) = named(finished, "exai.singleflight")
    assert parent_of(lookup) == parent_of(sharing) == root.context.span_id
    assert lookup.attributes["exai.cache.hit"] is False
    assert sharing.attributes["exai.singleflight.role"] == "leader"

    model = result.structured_content["model"]
    (attempt,) = [s for s in finished if s.name.startswith("chat ")]
    assert parent_of(attempt) == sharing.context.span_id
    assert attempt.kind is trace.SpanKind.CLIENT
    assert attempt.attributes["exai.attempt"] == 1
    assert attempt.attributes["gen_ai.provider.name"] == "kimi"
    assert attempt.attributes["gen_ai.response.model"] == model
    usage = result.structured_content["usage"]
    assert attempt.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attempt.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]

    waits = named(finished, "exai.permit_wait")
    assert sorted(w.attributes["exai.limit"] for w in waits) == ["global", "kimi"]
    assert all(parent_of(w) == attempt.context.span_id for w in waits)
    assert all(w.attributes["exai.queue.ahead"] == 0 for w in waits)

    # The provider request carried the attempt span's context.
    (request,) = fake.chat_requests
    sent = request.headers["traceparent"].split("-")
    assert sent[1] == trace_id and sent[2] == format(attempt.context.span_id, "016x")


async def test_a_coalesced_call_links_to_the_leader_and_makes_no_attempt(
    fake: FakeProvider, tmp_path: Path, spans: InMemorySpanExporter
):
    fake.hold()
    results: list[Any] = []
    async with in_process_client(traced_settings(fake, tmp_path)) as client:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def ask() -> None:
                    results.append(await client.call_tool("analyze", {"text": "same"}))

                tg.start_soon(ask)
                await fake.wait_for_active(1)
                tg.start_soon(ask)
                await wait_for_status(client, lambda s: s["calls"]["coalesced_waiters"] == 1)
                fake.release()
    assert [r.is_error for r in results] == [False, False]
    finished = spans.get_finished_spans()
    sharing = {
        s.attributes["exai.singleflight.role"]: s for s in named(finished, "exai.singleflight")
    }
    assert set(sharing) == {"leader", "joined"}
    leader, joined = sharing["leader"], sharing["joined"]
    assert [link.context.span_id for link in joined.links] == [leader.context.span_id]
    (attempt,) = [s for s in finished if s.name.startswith("chat ")]
    assert parent_of(attempt) == leader.context.span_id
    roots = named(finished, "tools/call analyze")
    assert sorted(r.attributes["exai.coalesced"] for r in roots) == [False, True]


async def test_a_retried_call_has_one_span_per_attempt_and_the_failure_on_the_first(
    fake: FakeProvider, tmp_path: Path, spans: InMemorySpanExporter
):
    fake.enqueue(Reply(status=500))
    async with in_process_client(traced_settings(fake, tmp_path)) as client:
        with anyio.fail_after(20):
            result = await client.call_tool("analyze", {"text": "flaky"})
    assert not result.is_error
    finished = spans.get_finished_spans()
    attempts = sorted(
        (s for s in finished if s.name.startswith("chat ")),
        key=lambda s: s.attributes["exai.attempt"],
    )
    assert [a.attributes["exai.attempt"] for a in attempts] == [1, 2]
    first, second = attempts
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes["error.type"] == "unavailable"
    assert second.status.status_code is not StatusCode.ERROR
    assert second.attributes["http.response.status_code"] == 200
    (sharing,) = named(finished, "exai.singleflight")
    assert {parent_of(a) for a in attempts} == {sharing.context.span_id}
    assert len(named(finished, "exai.permit_wait")) == 4  # two permits per attempt


async def test_with_tracing_off_nothing_is_recorded_and_no_traceparent_is_sent(
    fake: FakeProvider, tmp_path: Path, spans: InMemorySpanExporter
):
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        with anyio.fail_after(20):
            await client.call_tool("analyze", {"text": "untraced"})
    exai = [s for s in spans.get_finished_spans() if s.name.startswith(("exai.", "chat "))]
    assert exai == []
    assert "traceparent" not in fake.chat_requests[0].headers


async def test_a_rest_call_gets_a_root_span_of_its_own_and_its_log_line_the_trace_id(
    fake: FakeProvider,
    tmp_path: Path,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.INFO, logger="exai_mcp.calls")
    settings = traced_settings(fake, tmp_path, EXAI_LOG_FORMAT="json")
    async with http_server(settings) as srv, srv.rest() as http:
        with anyio.fail_after(20):
            reply = await http.post("/api/v1/execute", json=call_body("over rest"))
    assert reply.json()["isError"] is False
    finished = spans.get_finished_spans()
    (root,) = named(finished, "tools/call analyze")
    assert root.parent is None and root.kind is trace.SpanKind.SERVER
    assert root.attributes["exai.client"] == "rest"
    (sharing,) = named(finished, "exai.singleflight")
    assert parent_of(sharing) == root.context.span_id
    (line,) = [r for r in caplog.records if r.getMessage() == "call finished"]
    assert line.trace_id == format(root.context.trace_id, "032x")  # type: ignore[attr-defined]


def test_a_dead_collector_does_not_hold_up_the_exit(tmp_path: Path) -> None:
    """MCP clients kill a server that takes over about 2 s to exit once its stdin closes; the
    SDK's own exit hook waited out the exporter's retries (10 s against this collector)."""
    collector = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "EXAI_STATE_DB": ":memory:",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.getsockname()[1]}",
    }
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    with (
        collector,
        subprocess.Popen(
            [sys.executable, "-m", "exai_mcp"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as server,
    ):
        assert server.stdin is not None and server.stdout is not None
        for message in (
            hello,
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        ):
            server.stdin.write(json.dumps(message).encode() + b"\n")
        server.stdin.flush()
        assert b'"id":1' in server.stdout.readline()
        assert b'"id":2' in server.stdout.readline()  # spans are queued for export now
        closed = time.monotonic()
        server.stdin.close()
        code = server.wait(timeout=30)
        took = time.monotonic() - closed
    assert code == 0
    assert took < 5, f"exit took {took:.1f} s"
