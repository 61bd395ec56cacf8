"""`exai-mcp serve --http`: MCP and REST clients share one server and one pipeline.

The real app runs under uvicorn on an ephemeral 127.0.0.1 port in the test's event loop (the
fake provider runs there too); the start-up and shutdown tests run `python -m exai_mcp`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from anyio.abc import TaskGroup
from fake_provider import FakeProvider, Reply
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from exai_mcp.errors import (
    BusyError,
    ConfigError,
    DeadlineExceeded,
    FileAccessError,
    ProviderUnavailable,
    UnknownTool,
)
from exai_mcp.transports import http as http_transport
from exai_mcp.transports.http import status_for
from tests.conftest import (
    call_and_give_up_once_the_provider_has_it,
    http_server,
    provider_env,
    settings_for,
    wait_until,
)

TOKEN = "http-test-token-789"


def call_body(text: str) -> dict[str, Any]:
    return {"tool": "analyze", "arguments": {"text": text}}


# ----------------------------------------------------------------------------- REST


async def test_a_rest_call_answers_like_an_mcp_call_result(fake: FakeProvider, tmp_path: Path):
    async with http_server(settings_for(fake, tmp_path)) as srv, srv.rest() as http:
        reply = await http.post("/api/v1/execute", json=call_body("test"))
    assert reply.status_code == 200
    body = reply.json()
    assert body["isError"] is False
    assert body["content"][0]["type"] == "text"
    assert body["structuredContent"]["provider"] == "kimi"


async def test_the_three_curl_acceptance_calls_pass_word_for_word(
    fake: FakeProvider, tmp_path: Path
):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not on PATH")
    fake.latency = 0.3  # so that the calls made at once overlap at the provider

    async def run_curl(port: int, text: str) -> dict[str, Any]:
        data = json.dumps({"tool": "analyze", "arguments": {"text": text}})
        url = f"http://localhost:{port}/api/v1/execute"
        # The acceptance test's command, word for word but for the port.
        command = [curl, "-sS", "-X", "POST", url, "-H", "Content-Type: application/json"]
        result = await anyio.run_process([*command, "-d", data])
        return json.loads(result.stdout)

    async with http_server(settings_for(fake, tmp_path)) as srv:
        with anyio.fail_after(30):
            single = await run_curl(srv.port, "test")
            assert single["isError"] is False and fake.chat_count == 1

            duplicates: list[dict[str, Any]] = []
            async with anyio.create_task_group() as tg:
                for _ in range(2):
                    tg.start_soon(lambda: _append(duplicates, run_curl(srv.port, "duplicate_test")))
            assert [d["isError"] for d in duplicates] == [False, False]
            assert fake.chat_count == 2  # one provider request for the two

            loads: list[dict[str, Any]] = []
            async with anyio.create_task_group() as tg:
                for n in range(10):
                    tg.start_soon(lambda n=n: _append(loads, run_curl(srv.port, f"load_test_{n}")))
    assert len(loads) == 10 and not any(r["isError"] for r in loads)
    assert len({r["structuredContent"]["continuation_id"] for r in loads}) == 10
    assert fake.chat_count == 12  # each of the ten its own request and its own answer


async def _append(into: list[Any], awaitable: Any) -> None:
    into.append(await awaitable)


async def test_bad_requests_are_4xx_json_errors_and_the_server_stays_healthy(
    fake: FakeProvider, tmp_path: Path
):
    settings = settings_for(fake, tmp_path, EXAI_HTTP_MAX_BODY_BYTES=1 << 20)
    async with http_server(settings) as srv, srv.rest() as http:
        url = "/api/v1/execute"
        cases = {
            "20 MB": await http.post(
                url, content=b"x" * (20 << 20), headers={"content-type": "application/json"}
            ),
            "malformed": await http.post(
                url, content=b"{not json", headers={"content-type": "application/json"}
            ),
            "missing tool": await http.post(url, json={"arguments": {"text": "t"}}),
            "non-object arguments": await http.post(url, json={"tool": "analyze", "arguments": []}),
            "not an object": await http.post(url, json=["analyze"]),
            "misspelt arguments": await http.post(
                url, json={"tool": "analyze", "argumnts": {"text": "t"}}
            ),
            "text/plain": await http.post(
                url, content=b"{}", headers={"content-type": "text/plain"}
            ),
            "unknown tool": await http.post(url, json={"tool": "nope", "arguments": {}}),
            "lone surrogate": await http.post(
                url,
                content=b'{"tool": "workflow", "arguments": {"findings": "a \\ud800 b"}}',
                headers={"content-type": "application/json"},
            ),
            "invalid arguments": await http.post(
                url, json={"tool": "analyze", "arguments": {"text": "t", "temperature": "hot"}}
            ),
        }
        no_route = await http.get("/api/v1/nothing")
        wrong_method = await http.get(url)
        health = await http.get("/health")
    assert no_route.status_code == 404 and no_route.json()["isError"] is True
    assert wrong_method.status_code == 405 and wrong_method.json()["isError"] is True
    expected = {
        "20 MB": 413,
        "malformed": 400,
        "missing tool": 400,
        "non-object arguments": 400,
        "not an object": 400,
        "misspelt arguments": 400,
        "text/plain": 415,
        "unknown tool": 404,
        "lone surrogate": 400,
        "invalid arguments": 422,
    }
    assert {name: r.status_code for name, r in cases.items()} == expected
    for reply in cases.values():
        assert reply.json()["isError"] is True and reply.json()["content"][0]["text"]
    assert "EXAI_HTTP_MAX_BODY_BYTES" in cases["20 MB"].json()["content"][0]["text"]
    assert "'tool'" in cases["missing tool"].json()["content"][0]["text"]
    assert "got an array" in cases["non-object arguments"].json()["content"][0]["text"]
    assert (
        cases["misspelt arguments"]
        .json()["content"][0]["text"]
        .startswith("unknown field 'argumnts': expected")
    )
    assert "'nope'" in cases["unknown tool"].json()["content"][0]["text"]
    assert "analyze" in cases["unknown tool"].json()["content"][0]["text"]
    assert "temperature" in cases["invalid arguments"].json()["content"][0]["text"]
    assert (
        cases["lone surrogate"]
        .json()["content"][0]["text"]
        .startswith("arguments.findings is not valid Unicode")
    )
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert fake.chat_count == 0


async def test_a_body_streamed_past_the_limit_without_a_length_is_refused(
    fake: FakeProvider, tmp_path: Path
):
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 65536

    settings = settings_for(fake, tmp_path, EXAI_HTTP_MAX_BODY_BYTES=1 << 20)
    async with http_server(settings) as srv, srv.rest() as http:
        reply = await http.post(
            "/api/v1/execute", content=chunks(), headers={"content-type": "application/json"}
        )
    assert reply.status_code == 413 and reply.json()["isError"] is True


async def test_a_provider_failure_is_502_and_no_provider_configured_is_503(
    fake: FakeProvider, tmp_path: Path
):
    fake.enqueue(Reply(status=500, error_message="upstream broke"))
    named = {"tool": "analyze", "arguments": {"text": "boom", "model": "kimi-k2-0905-preview"}}
    settings = settings_for(fake, tmp_path, EXAI_MAX_ATTEMPTS=1)
    async with http_server(settings) as srv, srv.rest() as http:
        failed = await http.post("/api/v1/execute", json=named)
    assert failed.status_code == 502 and failed.json()["isError"] is True
    async with http_server(settings_for(None, tmp_path)) as srv, srv.rest() as http:
        unconfigured = await http.post("/api/v1/execute", json=call_body("q"))
        health = await http.get("/health")
    assert unconfigured.status_code == 503 and unconfigured.json()["isError"] is True
    assert "retry-after" not in unconfigured.headers  # a retry cannot help until a restart
    assert health.status_code == 503 and health.json()["status"] == "no provider configured"


def test_each_error_class_has_its_status():
    assert status_for(None) == 200
    assert status_for(UnknownTool("x")) == 404
    assert status_for(FileAccessError("/x", "outside the roots")) == 422
    assert status_for(BusyError("busy")) == 503
    assert status_for(ConfigError("no provider")) == 503
    assert status_for(DeadlineExceeded("late")) == 504
    assert status_for(ProviderUnavailable("5xx")) == 502
    assert status_for(RuntimeError("bug")) == 500


async def test_an_event_stream_caller_gets_progress_then_one_result(
    fake: FakeProvider, tmp_path: Path
):
    fake.answer = "one two three four five six"
    fake.chunk_delay = 0.1
    settings = settings_for(fake, tmp_path, EXAI_PROGRESS_INTERVAL_SECS=0.2)
    events: list[tuple[str, dict[str, Any]]] = []
    async with (
        http_server(settings) as srv,
        srv.rest() as http,
        http.stream(
            "POST",
            "/api/v1/execute",
            json=call_body("stream me"),
            headers={"accept": "text/event-stream"},
        ) as reply,
    ):
        assert reply.headers["content-type"].startswith("text/event-stream")
        event = ""
        async for line in reply.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, json.loads(line.removeprefix("data: "))))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert "progress" in kinds[:-1]
    result = events[-1][1]
    assert result["isError"] is False and result["status"] == 200


async def test_a_rest_caller_that_disconnects_stops_the_provider_request(
    fake: FakeProvider, tmp_path: Path
):
    fake.hold()
    settings = settings_for(fake, tmp_path, EXAI_CANCEL_GRACE_SECS=0)
    async with http_server(settings) as srv, srv.rest() as http:
        with anyio.move_on_after(5):
            async with anyio.create_task_group() as tg:

                async def give_up_once_the_provider_has_it() -> None:
                    await fake.wait_for_requests(1)
                    tg.cancel_scope.cancel()

                tg.start_soon(give_up_once_the_provider_has_it)
                await http.post("/api/v1/execute", json=call_body("abandoned"))
        await fake.wait_for_disconnects(1, timeout=5)
        await wait_until(lambda: srv.state.calls_in_flight == 0, timeout=5)
        health = (await http.get("/health")).json()
    assert fake.chat_count == 1
    assert all(lim["in_use"] == 0 for lim in health["limits"].values())


async def test_the_tool_list_is_what_tools_list_gives(fake: FakeProvider, tmp_path: Path):
    async with http_server(settings_for(fake, tmp_path)) as srv:
        async with srv.rest() as http:
            listed = (await http.get("/api/v1/tools")).json()["tools"]
        async with Client(f"{srv.url}/mcp") as client:
            over_mcp = (await client.list_tools()).tools
    assert [t["name"] for t in listed] == [t.name for t in over_mcp]
    assert listed[0]["inputSchema"] == over_mcp[0].input_schema


# ----------------------------------------------------------------------------- MCP


async def test_mcp_over_http_lists_tools_and_reports_progress(fake: FakeProvider, tmp_path: Path):
    fake.answer = "one two three four five six"
    fake.chunk_delay = 0.1
    seen: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)

    settings = settings_for(fake, tmp_path, EXAI_PROGRESS_INTERVAL_SECS=0.2)
    async with http_server(settings) as srv, Client(f"{srv.url}/mcp") as client:
        with anyio.fail_after(20):
            names = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool(
                "analyze", {"text": "over http"}, progress_callback=on_progress
            )
    assert names == ["analyze", "workflow", "status"]
    assert not result.is_error and result.structured_content["provider"] == "kimi"
    assert any(m and m.startswith("calling kimi:") for m in seen)


MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


async def mcp_session(http: httpx2.AsyncClient) -> dict[str, str]:
    """Headers of a fresh MCP session on /mcp (initialized), for raw JSON-RPC posts."""
    hello = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    started = await http.post("/mcp", json=hello, headers=MCP_HEADERS)
    headers = {**MCP_HEADERS, "Mcp-Session-Id": started.headers["mcp-session-id"]}
    ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    await http.post("/mcp", json=ready, headers=headers)
    return headers


async def test_an_invalid_json_rpc_message_over_http_is_answered_as_over_stdio(
    fake: FakeProvider, tmp_path: Path
):
    async with http_server(settings_for(fake, tmp_path)) as srv, srv.rest() as http:
        headers = await mcp_session(http)
        bad_id = await http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"}, headers=headers
        )
        batch = await http.post(
            "/mcp",
            json=[{"jsonrpc": "2.0", "id": 2, "method": "ping"}, {"jsonrpc": "2.0", "id": 3}],
            headers=headers,
        )
    assert bad_id.status_code == 400
    assert bad_id.json()["id"] is None and bad_id.json()["error"]["code"] == -32600
    assert "id must be a string or an integer" in bad_id.json()["error"]["message"]
    assert batch.status_code == 400
    assert [(e["id"], e["error"]["code"]) for e in batch.json()] == [(2, -32600), (3, -32600)]


async def test_an_id_reused_while_its_request_runs_is_refused_and_the_first_is_answered(
    fake: FakeProvider, tmp_path: Path
):
    """The SDK would hand the first request's answer to the second and leave it open."""
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call"}
    call["params"] = {"name": "analyze", "arguments": {"text": "held"}}
    replies: dict[str, httpx2.Response] = {}
    async with http_server(settings_for(fake, tmp_path)) as srv, srv.rest() as http:
        headers = await mcp_session(http)
        fake.hold()
        async with anyio.create_task_group() as tg:

            async def first() -> None:
                replies["first"] = await http.post("/mcp", json=call, headers=headers)

            tg.start_soon(first)
            await fake.wait_for_requests(1)
            replies["second"] = await http.post("/mcp", json=call, headers=headers)
            fake.release()
        await wait_until(lambda: srv.state.calls_in_flight == 0, timeout=5)
    second = replies["second"]
    assert second.status_code == 400 and second.json()["id"] == 7
    assert "id 7 is already in use by a request of this session" in second.text
    assert replies["first"].status_code == 200 and '"id":7' in replies["first"].text


async def test_cancelling_an_mcp_call_over_http_stops_the_provider_request(
    fake: FakeProvider, tmp_path: Path
):
    fake.hold()
    settings = settings_for(fake, tmp_path, EXAI_CANCEL_GRACE_SECS=0)
    async with http_server(settings) as srv, Client(f"{srv.url}/mcp") as client:
        with anyio.fail_after(5):
            await call_and_give_up_once_the_provider_has_it(client, fake, {"text": "cancel me"})
        await fake.wait_for_disconnects(1, timeout=5)
    assert fake.chat_count == 1


async def test_an_mcp_call_and_a_rest_call_at_once_make_one_provider_request(
    fake: FakeProvider, tmp_path: Path
):
    fake.hold()
    results: dict[str, Any] = {}
    async with (
        http_server(settings_for(fake, tmp_path)) as srv,
        Client(f"{srv.url}/mcp") as client,
        srv.rest() as http,
    ):
        assert srv.state.services is not None
        pipeline = srv.state.services.pipeline
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def over_mcp() -> None:
                    results["mcp"] = await client.call_tool("analyze", {"text": "shared"})

                async def over_rest() -> None:
                    results["rest"] = await http.post(
                        "/api/v1/execute", json=call_body("shared"), headers={"X-Client-Id": "ci"}
                    )

                tg.start_soon(over_mcp)
                await fake.wait_for_requests(1)
                tg.start_soon(over_rest)
                await wait_until(lambda: pipeline.stats()["coalesced_waiters"] >= 1, timeout=5)
                fake.release()
    assert fake.chat_count == 1
    assert not results["mcp"].is_error
    assert results["rest"].status_code == 200
    assert (
        results["rest"].json()["structuredContent"]["analysis"]
        == results["mcp"].structured_content["analysis"]
    )


# ----------------------------------------------------------------------------- security


async def test_with_a_token_every_endpoint_but_health_needs_it(fake: FakeProvider, tmp_path: Path):
    settings = settings_for(fake, tmp_path, EXAI_HTTP_TOKEN=TOKEN)
    async with http_server(settings) as srv, srv.rest() as http:
        missing = await http.post("/api/v1/execute", json=call_body("t"))
        wrong = await http.post(
            "/api/v1/execute", json=call_body("t"), headers={"Authorization": "Bearer nope"}
        )
        mcp_missing = await http.post("/mcp", json={})
        tools_missing = await http.get("/api/v1/tools")
        right = await http.post(
            "/api/v1/execute", json=call_body("t"), headers={"Authorization": f"Bearer {TOKEN}"}
        )
        health = await http.get("/health")
        full_health = await http.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as authed,
            Client(streamable_http_client(f"{srv.url}/mcp", http_client=authed)) as client,
        ):
            names = [t.name for t in (await client.list_tools()).tools]
    for refused in (missing, wrong, mcp_missing, tools_missing):
        assert refused.status_code == 401 and refused.json()["isError"] is True
        assert TOKEN not in refused.text
    assert right.status_code == 200
    assert health.status_code == 200 and TOKEN not in health.text
    # Without the token: the status only (a balancer's probe), not pids, breakers or URLs.
    assert set(health.json()) == {"status", "version"} and health.json()["status"] == "ok"
    assert {"pid", "providers", "limits"} <= set(full_health.json())
    assert "analyze" in names


async def test_a_foreign_host_or_origin_is_refused(fake: FakeProvider, tmp_path: Path):
    async with http_server(settings_for(fake, tmp_path)) as srv, srv.rest() as http:
        foreign = {"Host": "evil.example:80"}
        execute = await http.post("/api/v1/execute", json=call_body("t"), headers=foreign)
        health = await http.get("/health", headers=foreign)
        mcp = await http.post("/mcp", json={}, headers=foreign)
        origin = await http.get("/health", headers={"Origin": "http://evil.example"})
        local = await http.get("/health", headers={"Host": f"localhost:{srv.port}"})
        local6 = await http.get("/health", headers={"Host": f"[::1]:{srv.port}"})
    assert execute.status_code == 421 and execute.json()["isError"] is True
    assert health.status_code == 421
    assert mcp.status_code >= 400
    assert origin.status_code == 403
    assert local.status_code == 200 and local6.status_code == 200
    assert fake.chat_count == 0


async def test_a_loopback_bind_other_than_127_0_0_1_accepts_its_own_address(
    fake: FakeProvider, tmp_path: Path
):
    async with http_server(settings_for(fake, tmp_path), host="127.0.0.2") as srv:
        async with srv.rest() as http:
            health = await http.get("/health")
            execute = await http.post("/api/v1/execute", json=call_body("t"))
            foreign = await http.get("/health", headers={"Host": "evil.example"})
        async with Client(streamable_http_client(f"{srv.url}/mcp")) as client:
            names = [t.name for t in (await client.list_tools()).tools]
    assert health.status_code == 200 and execute.status_code == 200
    assert foreign.status_code == 421
    assert "analyze" in names


async def test_a_token_set_with_stray_white_space_still_lets_clients_in(
    fake: FakeProvider, tmp_path: Path
):
    settings = settings_for(fake, tmp_path, EXAI_HTTP_TOKEN=f" {TOKEN}\n")
    async with http_server(settings) as srv, srv.rest() as http:
        right = await http.post(
            "/api/v1/execute", json=call_body("t"), headers={"Authorization": f"Bearer {TOKEN}"}
        )
        wrong = await http.post(
            "/api/v1/execute", json=call_body("t"), headers={"Authorization": "Bearer nope"}
        )
    assert right.status_code == 200 and wrong.status_code == 401


def _empty_env_file(tmp_path: Path) -> str:
    path = tmp_path / "none.env"  # no stray .env (with real keys) reaches the server
    path.touch()
    return str(path)


def _server_env(fake: FakeProvider, tmp_path: Path, **extra: Any) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "EXAI_LOG_LEVEL": "INFO",
        "EXAI_ENV_FILE": _empty_env_file(tmp_path),
        **provider_env(fake, tmp_path, **extra),
    }


def _keyless_env(tmp_path: Path) -> dict[str, str]:
    """A server's environment with no provider configured and no stray .env file."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "EXAI_STATE_DB": str(tmp_path / "s.db"),
        "EXAI_ENV_FILE": _empty_env_file(tmp_path),
    }


def test_a_non_loopback_bind_without_a_token_refuses_to_start(tmp_path: Path):
    env = _keyless_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "exai_mcp", "serve", "--http", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "EXAI_HTTP_TOKEN" in done.stderr
    refusals = [line for line in done.stderr.splitlines() if line.startswith("exai-mcp:")]
    assert len(refusals) == 1 and "0.0.0.0" in refusals[0], done.stderr


# ----------------------------------------------------------------------------- shutdown


@dataclass
class ServedProcess:
    """`exai-mcp serve --http` as a process: its URL, its stderr lines so far, and an event
    set once it logs that it drains."""

    process: anyio.abc.Process
    url: str = ""
    stderr: list[str] = field(default_factory=list)
    listening: anyio.Event = field(default_factory=anyio.Event)
    draining: anyio.Event = field(default_factory=anyio.Event)

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        buffer = ""
        async for chunk in self.process.stderr:
            buffer += chunk.decode(errors="replace")
            *lines, buffer = buffer.split("\n")
            for line in lines:
                self.stderr.append(line)
                if "listening on http://" in line and not self.url:
                    self.url = line.split("listening on ", 1)[1].strip()
                    self.listening.set()
                if "shutting down: no new calls" in line:
                    self.draining.set()


@asynccontextmanager
async def served(
    fake: FakeProvider, tmp_path: Path, *args: str, **env: Any
) -> AsyncIterator[ServedProcess]:
    """The server started (its URL known), in a task group that reads its stderr; killed on
    exit if it has not exited by itself."""
    process = await anyio.open_process(
        [sys.executable, "-m", "exai_mcp", "serve", "--http", "--port", "0", *args],
        env=_server_env(fake, tmp_path, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    running = ServedProcess(process)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(running.read_stderr)
            with anyio.fail_after(20):
                await running.listening.wait()
            yield running
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.move_on_after(5):
                await process.wait()


@asynccontextmanager
async def served_with_clients(
    fake: FakeProvider, tmp_path: Path, **env: Any
) -> AsyncIterator[tuple[ServedProcess, TaskGroup, httpx2.AsyncClient, Client]]:
    """`served`, with a task group for the callers, a REST client and an MCP session."""
    async with (
        served(fake, tmp_path, **env) as server,
        anyio.create_task_group() as tg,
        httpx2.AsyncClient(base_url=server.url, timeout=15) as http,
        Client(f"{server.url}/mcp") as client,
    ):
        # The client checks a result against the tool's outputSchema, fetching the list
        # first if it has none: fetched now, not while the server is shutting down.
        await client.list_tools()
        yield server, tg, http, client


async def test_sigterm_lets_calls_in_flight_finish_refuses_new_ones_then_exits_0(
    fake: FakeProvider, tmp_path: Path
):
    fake.latency = 1.5
    reply: dict[str, Any] = {}
    async with served_with_clients(fake, tmp_path) as (server, tg, http, client):

        async def over_rest() -> None:
            reply["rest"] = await http.post("/api/v1/execute", json=call_body("slow"))

        async def over_mcp() -> None:
            reply["mcp"] = await client.call_tool("analyze", {"text": "slow too"})

        tg.start_soon(over_rest)
        tg.start_soon(over_mcp)
        await fake.wait_for_active(2, timeout=10)
        server.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):  # the server logs that it drains
            await server.draining.wait()
        try:
            late = await httpx2.AsyncClient(base_url=server.url, timeout=5).post(
                "/api/v1/execute", json=call_body("late")
            )
            reply["late"] = late.status_code
        except httpx2.TransportError:  # no longer accepting connections
            reply["late"] = "refused"
        with anyio.fail_after(20):
            code = await server.process.wait()
    assert reply["rest"].status_code == 200, reply["rest"].text
    assert reply["rest"].json()["isError"] is False
    assert not reply["mcp"].is_error
    assert reply["late"] in (503, "refused")
    assert code == 0, "\n".join(server.stderr)
    assert fake.chat_count == 2
    assert fake.disconnects == 0


async def test_calls_still_running_when_the_grace_ends_get_an_answer_saying_so(
    fake: FakeProvider, tmp_path: Path
):
    fake.hold()  # never answers: every call outlives the grace
    cut = "the server shut down before this call finished (it had 1 s, EXAI_SHUTDOWN_GRACE_SECS)"
    reply: dict[str, Any] = {}
    grace = {"EXAI_SHUTDOWN_GRACE_SECS": 1}
    async with served_with_clients(fake, tmp_path, **grace) as (server, tg, http, client):

        async def over_rest() -> None:
            reply["rest"] = await http.post("/api/v1/execute", json=call_body("held"))

        async def over_sse() -> None:
            headers = {"Accept": "text/event-stream"}
            body = call_body("held too")
            reply["sse"] = await http.post("/api/v1/execute", json=body, headers=headers)

        async def over_mcp() -> None:
            reply["mcp"] = await client.call_tool("analyze", {"text": "held as well"})

        for caller in (over_rest, over_sse, over_mcp):
            tg.start_soon(caller)
        await fake.wait_for_requests(3, timeout=10)
        server.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            code = await server.process.wait()
    fake.release()
    assert reply["rest"].status_code == 503
    assert reply["rest"].json()["content"][0]["text"].startswith(cut)
    result_event = reply["sse"].text.split("event: result\ndata: ", 1)[1]
    assert json.loads(result_event)["content"][0]["text"].startswith(cut)
    assert reply["mcp"].is_error and reply["mcp"].content[0].text.startswith(cut)
    assert code == 0
    assert not [line for line in server.stderr if "Traceback" in line], server.stderr


async def test_a_stalled_upload_is_cut_off_and_is_no_call_in_flight(
    fake: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(http_transport, "BODY_TIMEOUT", 1.0)
    async with http_server(settings_for(fake, tmp_path)) as srv:
        stream = await anyio.connect_tcp("127.0.0.1", srv.port)
        async with stream:
            await stream.send(
                b"POST /api/v1/execute HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"tool": "'
            )
            await wait_until(lambda: srv.state.open_requests == 1, timeout=5)
            assert srv.state.calls_in_flight == 0  # a drain would not wait for it
            with anyio.fail_after(10):
                answer = await stream.receive()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    assert b"did not arrive within 1 s" in rest
    assert fake.chat_count == 0


async def test_each_call_names_its_client_to_the_pipeline(
    fake: FakeProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level("INFO", logger="exai_mcp")
    async with http_server(settings_for(fake, tmp_path)) as srv:
        async with srv.rest() as http:
            await http.post("/api/v1/execute", json=call_body("anonymous"))
            await http.post(
                "/api/v1/execute", json=call_body("named"), headers={"X-Client-Id": "ci-bot"}
            )
        async with Client(f"{srv.url}/mcp", mode="legacy") as client:
            await client.call_tool("analyze", {"text": "in a session"})
    done = [r.getMessage() for r in caplog.records if " done in " in r.getMessage()]
    assert any(" from rest " in m for m in done)
    assert any(" from ci-bot " in m for m in done)
    over_mcp = [m for m in done if " from rest " not in m and " from ci-bot " not in m]
    assert len(over_mcp) == 1 and re.search(r" from [0-9a-f]{32} ", over_mcp[0]), done


async def test_health_is_503_once_no_provider_can_serve(fake: FakeProvider, tmp_path: Path):
    fake.enqueue(Reply(status=401), Reply(status=401))  # both keys rejected: both paused
    async with http_server(settings_for(fake, tmp_path)) as srv, srv.rest() as http:
        before = await http.get("/health")
        rejected = await http.post("/api/v1/execute", json=call_body("any"))
        after = await http.get("/health")
    assert before.status_code == 200
    assert rejected.status_code == 502 and rejected.json()["isError"] is True
    assert after.status_code == 503 and after.json()["status"] == "no provider available"
    assert {p["breaker"]["state"] for p in after.json()["providers"].values()} == {"open"}
    assert fake.chat_count == 2


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_an_ipv6_host_may_be_given_in_brackets_as_in_a_url(
    fake: FakeProvider, tmp_path: Path
):
    async with served(fake, tmp_path, "--host", "[::1]") as server:
        async with httpx2.AsyncClient(base_url=server.url) as http:
            health = await http.get("/health")
        server.process.terminate()
    assert server.url.startswith("http://[::1]:")
    assert health.status_code == 200


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _keyless_env(tmp_path)
        done = subprocess.run(
            [sys.executable, "-m", "exai_mcp", "serve", "--http", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"could not listen on 127.0.0.1:{port}" in done.stderr
