"""`EXAI_LOG_FORMAT=json` and `EXAI_METRICS_PORT`, as an operator runs `exai-mcp` on stdio.

The real command (`python -m exai_mcp`) on raw pipes: stdout must carry JSON-RPC only, stderr
one JSON object per line, and /metrics must answer on 127.0.0.1 beside the MCP session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from fake_provider import FakeProvider
from prometheus_client.parser import text_string_to_metric_families

from exai_mcp.cli import main
from exai_mcp.observability.logs import JsonLines
from exai_mcp.redact import Redactor
from tests.conftest import message, provider_env, stdio_params

KEY = "kimi-test-key-123"  # what provider_env gives the server
WAIT = 15.0


@dataclass
class Running:
    process: asyncio.subprocess.Process
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, lines: list[str], pattern: str) -> re.Match[str]:
        """The first line of `lines` matching `pattern`, waiting (bounded) for it to arrive."""
        with anyio.fail_after(WAIT):
            while True:
                for line in lines:
                    if found := re.search(pattern, line):
                        return found
                self.changed.clear()
                await self.changed.wait()

    async def call(self, request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(message(request_id, method, params))
        await self.process.stdin.drain()
        await self.wait_for(self.stdout, f'"id":{request_id}[,}}]')
        return next(
            json.loads(line) for line in self.stdout if json.loads(line).get("id") == request_id
        )


@asynccontextmanager
async def stdio_server(env: dict[str, str], cwd: Path) -> AsyncIterator[Running]:
    """The server on raw pipes, initialized; both output streams collected line by line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exai_mcp",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=stdio_params(env).env,
        cwd=cwd,
    )
    running = Running(process)

    async def collect(stream: asyncio.StreamReader, into: list[str]) -> None:
        async for raw in stream:
            into.append(raw.decode().rstrip("\n"))
            running.changed.set()

    assert process.stdout is not None and process.stderr is not None and process.stdin is not None
    readers = [
        asyncio.create_task(collect(process.stdout, running.stdout)),
        asyncio.create_task(collect(process.stderr, running.stderr)),
    ]
    try:
        init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}  # fmt: skip
        await running.call(0, "initialize", init)
        process.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        yield running
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), WAIT)
        except TimeoutError:
            process.kill()
            await process.wait()
        await asyncio.wait_for(asyncio.gather(*readers), WAIT)


async def test_json_logs_are_one_object_per_line_with_one_line_per_call_and_no_key(
    fake: FakeProvider, tmp_path: Path
):
    env = provider_env(fake, tmp_path, EXAI_LOG_FORMAT="json", EXAI_LOG_LEVEL="INFO")
    async with stdio_server(env, tmp_path) as server:
        reply = await server.call(1, "tools/call", {"name": "analyze", "arguments": {"text": "hi"}})
        await server.wait_for(server.stderr, '"msg": "call finished"')
    assert reply["result"]["isError"] is False

    entries = [json.loads(line) for line in server.stderr]  # every line is one JSON object
    assert all({"ts", "level", "msg"} <= set(entry) for entry in entries)
    finished = [e for e in entries if e["msg"] == "call finished"]
    assert len(finished) == 1
    line = finished[0]
    assert (line["tool"], line["request_id"], line["client"]) == ("analyze", "1", "stdio")
    assert line["outcome"] == "ok" and line["cached"] is False and line["coalesced"] is False
    assert line["provider_requests"] == 1 and line["retries"] == 0
    assert line["output_tokens"] == reply["result"]["structuredContent"]["usage"]["completion_tokens"]  # fmt: skip
    assert line["duration_ms"] > 0
    assert "trace_id" not in line  # tracing is off
    assert KEY not in "\n".join(server.stderr + server.stdout)
    assert all(json.loads(out)["jsonrpc"] == "2.0" for out in server.stdout)


async def test_what_a_client_sends_cannot_forge_a_text_log_line(fake: FakeProvider, tmp_path: Path):
    env = provider_env(fake, tmp_path, EXAI_LOG_LEVEL="INFO")
    forged = "/x\n2026-12-03 10:00:00,000 ERROR exai_mcp: FORGED\x00"
    async with stdio_server(env, tmp_path) as server:
        arguments = {"text": "hi", "files": [forged]}
        reply = await server.call(1, "tools/call", {"name": "analyze", "arguments": arguments})
        await server.wait_for(server.stderr, "analyze request 1 from stdio failed")
    assert reply["result"]["isError"] is True
    assert not [line for line in server.stderr if "FORGED" in line and "failed" not in line]
    assert any(
        "/x\\n2026-12-03 10:00:00,000 ERROR exai_mcp: FORGED\\x00" in line for line in server.stderr
    )


async def test_the_stdio_server_serves_metrics_on_loopback_when_asked(
    fake: FakeProvider, tmp_path: Path
):
    env = provider_env(fake, tmp_path, EXAI_METRICS_PORT="0", EXAI_LOG_LEVEL="INFO")
    async with stdio_server(env, tmp_path) as server:
        found = await server.wait_for(server.stderr, r"metrics: (http://127\.0\.0\.1:\d+)/metrics")
        await server.call(1, "tools/call", {"name": "analyze", "arguments": {"text": "hi"}})
        async with httpx2.AsyncClient(base_url=found.group(1), timeout=10) as http:
            scraped = await http.get("/metrics")
            rebound = await http.get("/metrics", headers={"Host": "evil.example"})
            elsewhere = await http.get("/mcp")
    assert scraped.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }
    assert samples["exai_tool_calls_total", (("outcome", "ok"), ("tool", "analyze"))] == 1
    assert rebound.status_code == 421 and elsewhere.status_code == 404
    assert all(json.loads(out)["jsonrpc"] == "2.0" for out in server.stdout)


def test_a_bad_log_format_exits_2_naming_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("EXAI_LOG_FORMAT", "xml")
    with pytest.raises(SystemExit) as exited:
        main(["serve"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "EXAI_LOG_FORMAT='xml'" in err and "text, json" in err


def test_the_json_formatter_masks_a_key_anywhere_in_the_line():
    formatter = JsonLines(Redactor([KEY]))
    record = logging.LogRecord("exai_mcp", logging.WARNING, __file__, 1, "got %s", (KEY,), None)
    record.client = f"client-{KEY}"
    entry = json.loads(formatter.format(record))
    assert KEY not in json.dumps(entry)
    assert entry["msg"] == "got ***" and entry["level"] == "WARNING"
