"""Shared fixtures: a clean environment, the bundled fake provider, and ways to reach the server.

Provider code is exercised with the real `openai` SDK over real HTTP against
`scripts/fake_provider.py` on 127.0.0.1; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from fake_provider import FakeProvider
from mcp import Client, StdioServerParameters

from exai_mcp.config import Settings
from exai_mcp.server import build_server
from exai_mcp.transports.http import HttpState, build_app
from tests.redis_server import RedisServer

SETTING_PREFIXES = (
    "EXAI_",
    "KIMI_",
    "GLM_",
    "MOONSHOT_",
    "ZHIPUAI_",
    "ZAI_",
    "WORKFLOW_",
    "EXPERT_",
    "OTEL_",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No setting from the developer's shell or a stray .env reaches a test."""
    for name in list(os.environ):
        if name.startswith(SETTING_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def glm_fake() -> AsyncIterator[FakeProvider]:
    """A second fake provider, for tests where Kimi and GLM must behave differently."""
    async with FakeProvider() as provider:
        yield provider


def provider_env(fake: FakeProvider, tmp_path: Path, **extra: Any) -> dict[str, str]:
    """Variables for a server that talks to the fake provider as both Kimi and GLM."""
    env = {
        "KIMI_API_KEY": "kimi-test-key-123",
        "KIMI_BASE_URL": fake.base_url("/v1"),
        "GLM_API_KEY": "glm-test-key-456",
        "GLM_BASE_URL": fake.base_url("/api/paas/v4"),
        "EXAI_STATE_DB": str(tmp_path / "state.sqlite3"),
        "EXAI_ALLOWED_ROOTS": str(tmp_path),
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def settings_for_two(
    kimi: FakeProvider, glm: FakeProvider, tmp_path: Path, **extra: Any
) -> Settings:
    """Settings for Kimi and GLM served by two fakes, so each can misbehave on its own."""
    return settings_for(
        kimi,
        tmp_path,
        GLM_BASE_URL=glm.base_url("/api/paas/v4"),
        **extra,
    )


def settings_for(fake: FakeProvider | None, tmp_path: Path, **extra: Any) -> Settings:
    """Settings as the server would read them from its environment."""
    env = provider_env(fake, tmp_path, **extra) if fake else {"EXAI_STATE_DB": ":memory:", **extra}
    return Settings.from_environment({**os.environ, **{k: str(v) for k, v in env.items()}})


@asynccontextmanager
async def in_process_client(settings: Settings) -> AsyncIterator[Client]:
    """The real server over in-memory JSON-RPC streams (legacy handshake, no subprocess)."""
    async with Client(build_server(settings), mode="legacy") as client:
        yield client


def stdio_params(env: dict[str, str], *args: str) -> StdioServerParameters:
    """Spawn `python -m exai_mcp`; the stdio client forwards only a few variables, so pass all."""
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "EXAI_LOG_LEVEL": "INFO",
        **env,
    }
    return StdioServerParameters(
        command=sys.executable, args=["-m", "exai_mcp", *args], env=full_env
    )


async def read_status(client: Client) -> dict[str, Any]:
    result = await client.call_tool("status", {})
    assert not result.is_error, result.content
    return result.structured_content


async def wait_for_status(
    client: Client, predicate: Any, *, timeout: float = 5.0
) -> dict[str, Any]:
    """Poll `status` (bounded in time) until predicate(status) holds; the status tool is cheap."""
    import anyio

    with anyio.fail_after(timeout):
        while True:
            status = await read_status(client)
            if predicate(status):
                return status
            await anyio.sleep(0.01)


def nothing_held(status: dict[str, Any]) -> bool:
    """No shared execution, no permit in use, nobody waiting: the server is at rest."""
    limits = status["limits"].values()
    return status["inflight"] == 0 and all(
        lim["in_use"] == 0 and lim["waiting"] == 0 for lim in limits
    )


async def call_and_give_up_once_the_provider_has_it(
    client: Client, fake: FakeProvider, arguments: dict, *, tool: str = "analyze"
) -> None:
    """A client that gives up on its call (cancels it) as soon as the provider is working on it."""
    with anyio.CancelScope() as scope:

        async def cancel_when_seen() -> None:
            await fake.wait_for_requests(fake.chat_count + 1)
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when_seen)
            await client.call_tool(tool, arguments)


RAW_REPLY_WAIT = 10.0  # seconds for one reply from a raw-pipe server


def message(request_id: int, method: str, params: dict[str, Any]) -> bytes:
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return json.dumps(body).encode() + b"\n"


@asynccontextmanager
async def raw_stdio_server(
    env: dict[str, str], cwd: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m exai_mcp` on raw pipes (no MCP client between), initialized; stdin is closed
    and the process reaped after."""
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exai_mcp",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**stdio_params(env).env, "EXAI_LOG_LEVEL": "WARNING"},
        cwd=cwd,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        server.stdin.write(message(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}))  # fmt: skip
        server.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        await server.stdin.drain()
        await asyncio.wait_for(server.stdout.readline(), RAW_REPLY_WAIT)
        yield server
    finally:
        server.stdin.close()
        try:
            await asyncio.wait_for(server.wait(), RAW_REPLY_WAIT)
        except TimeoutError:
            server.kill()
            await server.wait()


# ----------------------------------------------------------------------------- HTTP


@dataclass
class Running:
    url: str
    port: int
    state: HttpState

    def rest(self, **kwargs: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.url, timeout=10, **kwargs)


@asynccontextmanager
async def http_server(settings: Settings, host: str = "127.0.0.1") -> AsyncIterator[Running]:
    """The app under uvicorn on an ephemeral port; stopped on exit (connections get 5 s)."""
    app, state = build_app(settings, None, host)
    config = uvicorn.Config(
        app, host=host, port=0, log_config=None, lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await wait_until(lambda: server.started, timeout=10)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield Running(f"http://{host}:{port}", port, state)
        finally:
            server.should_exit = True


async def wait_until(predicate: Callable[[], bool], *, timeout: float) -> None:
    """Poll (bounded in time) until predicate() holds."""
    with anyio.fail_after(timeout):
        while True:
            if predicate():
                return
            await anyio.sleep(0.01)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (each test uses its own key prefix)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key namespace of its own, so tests sharing the session's Redis never meet."""
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that stop or restart it."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
