"""Attached stdio processes (EXAI_DAEMON): every window's calls answered by one daemon.

The shims are real `python -m exai_mcp` processes driven over stdio by the SDK's client. The
daemon is either the real app under uvicorn in the test's event loop (`http_server`), or, in
spawn mode, the `exai-mcp serve --http` process the shims start themselves; those tests find
it through /proc and kill it when they end.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from fake_provider import FakeProvider
from mcp import Client

from exai_mcp.config import load_settings
from exai_mcp.errors import ConfigError
from tests.conftest import (
    call_and_give_up_once_the_provider_has_it,
    http_server,
    provider_env,
    settings_for,
    stdio_params,
    wait_until,
)

TOKEN = "attach-test-token-321"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shim_env(fake: FakeProvider, tmp_path: Path, url: str, mode: str, **extra: Any) -> Any:
    empty = tmp_path / "none.env"
    empty.touch()
    env = provider_env(
        fake, tmp_path, EXAI_DAEMON=mode, EXAI_DAEMON_URL=url, EXAI_ENV_FILE=empty, **extra
    )
    return stdio_params(env)


def daemons_on(port: int) -> list[int]:
    """Pids of `exai-mcp serve --http` processes bound to `port` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--http" in argv and b"--port" in argv and str(port).encode() in argv:
            found.append(int(entry.name))
    return found


@asynccontextmanager
async def reaped_daemons(port: int) -> AsyncIterator[None]:
    """Whatever daemons the test's shims started on `port` are killed when it ends."""
    try:
        yield
    finally:
        for pid in daemons_on(port):
            os.kill(pid, signal.SIGKILL)


needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")


# ----------------------------------------------------------------------------- settings


def test_the_shim_timeout_sits_between_the_server_deadline_and_the_client(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("EXAI_STATE_DB", ":memory:")
    monkeypatch.setenv("EXAI_DAEMON", "spawn")
    monkeypatch.setenv("WORKFLOW_TOOL_TIMEOUT_SECS", "10")
    timeouts = load_settings().timeouts()
    assert (timeouts.server_deadline, timeouts.shim, timeouts.client_minimum) == (15, 20, 25)
    assert "shim=20s" in timeouts.describe()

    monkeypatch.setenv("WORKFLOW_TOOL_TIMEOUT_SECS", "1")  # ceil(1.5) == ceil(2): no room
    with pytest.raises(ConfigError, match=r"WORKFLOW_TOOL_TIMEOUT_SECS=1 leaves no room"):
        load_settings()
    monkeypatch.setenv("EXAI_DAEMON", "off")  # no shim, no such rule
    assert load_settings().timeouts().shim == 2

    monkeypatch.setenv("EXAI_DAEMON", "auto")
    monkeypatch.setenv("WORKFLOW_TOOL_TIMEOUT_SECS", "10")
    monkeypatch.setenv("EXAI_CLIENT_TIMEOUT_SECS", "18")  # gives up before the shim does
    with pytest.raises(ConfigError, match=r"EXAI_CLIENT_TIMEOUT_SECS=18 is not above the shim"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("EXAI_DAEMON", "always", "must be one of off, auto, require, spawn"),
        ("EXAI_DAEMON_URL", "127.0.0.1:8079", "must be an http:// or https:// URL"),
        ("EXAI_DAEMON_URL", "http://127.0.0.1:8079/mcp", "without a path"),
        ("EXAI_DAEMON_IDLE_EXIT_SECS", "-1", "greater than or equal to 0"),
    ],
)
def test_bad_daemon_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
):
    monkeypatch.setenv("EXAI_STATE_DB", ":memory:")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert variable in str(caught.value) and expected in str(caught.value)


# ----------------------------------------------------------------------------- attached


async def test_an_mcp_session_a_rest_call_and_a_shim_share_one_provider_request(
    fake: FakeProvider, tmp_path: Path
):
    fake.hold()
    results: dict[str, Any] = {}
    async with http_server(settings_for(fake, tmp_path)) as daemon:
        assert daemon.state.services is not None
        pipeline = daemon.state.services.pipeline
        async with (
            Client(shim_env(fake, tmp_path, daemon.url, "auto")) as shim,
            Client(f"{daemon.url}/mcp") as session,
            daemon.rest() as http,
        ):
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:

                    async def over_shim() -> None:
                        results["shim"] = await shim.call_tool("analyze", {"text": "shared"})

                    async def over_mcp() -> None:
                        results["mcp"] = await session.call_tool("analyze", {"text": "shared"})

                    async def over_rest() -> None:
                        body = {"tool": "analyze", "arguments": {"text": "shared"}}
                        results["rest"] = await http.post("/api/v1/execute", json=body)

                    tg.start_soon(over_shim)
                    await fake.wait_for_requests(1)
                    busy = pipeline.client_limits.clients()
                    results["clients"] = list(busy)
                    tg.start_soon(over_mcp)
                    tg.start_soon(over_rest)
                    await wait_until(lambda: pipeline.stats()["coalesced_waiters"] >= 2, timeout=10)
                    fake.release()
            # One cache too: the shim's next ask is a hit on what the session's call stored.
            again = await shim.call_tool("analyze", {"text": "shared"})
            # Attached: the shim's status is the daemon's, which counts every call.
            status = (await shim.call_tool("status", {})).structured_content
    assert fake.chat_count == 1
    assert not results["shim"].is_error and not results["mcp"].is_error
    assert results["rest"].status_code == 200
    answers = {
        results["shim"].structured_content["analysis"],
        results["mcp"].structured_content["analysis"],
        results["rest"].json()["structuredContent"]["analysis"],
    }
    assert len(answers) == 1
    assert [c for c in results["clients"] if c.startswith("stdio-")], results["clients"]
    assert again.structured_content["cached"] is True
    assert status["calls"]["count"] >= 4


async def test_progress_reaches_the_stdio_client_and_a_cancel_stops_the_provider(
    fake: FakeProvider, tmp_path: Path
):
    fake.answer = "one two three four five six"
    fake.chunk_delay = 0.1
    seen: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)

    settings = settings_for(
        fake, tmp_path, EXAI_PROGRESS_INTERVAL_SECS=0.2, EXAI_CANCEL_GRACE_SECS=0
    )
    async with (
        http_server(settings) as daemon,
        Client(shim_env(fake, tmp_path, daemon.url, "require")) as shim,
    ):
        with anyio.fail_after(30):
            result = await shim.call_tool(
                "analyze", {"text": "with progress"}, progress_callback=on_progress
            )
        assert not result.is_error, result.content
        assert any(m and m.startswith("calling kimi:") for m in seen), seen

        fake.hold()
        with anyio.fail_after(10):
            await call_and_give_up_once_the_provider_has_it(shim, fake, {"text": "cancel me"})
        await fake.wait_for_disconnects(1, timeout=10)
    assert fake.chat_count == 2


async def test_the_shim_gives_up_at_its_own_timeout_and_cancels_the_daemon_request(
    fake: FakeProvider, tmp_path: Path
):
    fake.hold()  # the provider never answers; the daemon (T=10) would wait 15 s
    settings = settings_for(fake, tmp_path, WORKFLOW_TOOL_TIMEOUT_SECS=10, EXAI_CANCEL_GRACE_SECS=0)
    async with http_server(settings) as daemon:
        params = shim_env(fake, tmp_path, daemon.url, "require", WORKFLOW_TOOL_TIMEOUT_SECS=2)
        async with Client(params) as shim:
            with anyio.fail_after(20):
                started = time.monotonic()
                result = await shim.call_tool("analyze", {"text": "too slow"})
                waited = time.monotonic() - started
            await fake.wait_for_disconnects(1, timeout=10)
    assert result.is_error
    text = result.content[0].text
    assert daemon.url in text and "within the shim's 4 s" in text, text
    assert 3.5 <= waited < 10, waited


async def test_with_require_and_no_daemon_each_call_names_the_url(
    fake: FakeProvider, tmp_path: Path
):
    url = f"http://127.0.0.1:{free_port()}"
    async with Client(shim_env(fake, tmp_path, url, "require")) as shim:
        with anyio.fail_after(20):
            tools = [t.name for t in (await shim.list_tools()).tools]
            result = await shim.call_tool("analyze", {"text": "nobody home"})
    assert tools == ["analyze", "workflow", "status"]
    assert result.is_error
    text = result.content[0].text
    assert f"the exai-mcp daemon at {url} is not answering" in text
    assert "exai-mcp serve --http" in text and "EXAI_DAEMON=spawn" in text
    assert fake.chat_count == 0


async def test_auto_without_a_daemon_serves_in_process(fake: FakeProvider, tmp_path: Path):
    url = f"http://127.0.0.1:{free_port()}"
    async with Client(shim_env(fake, tmp_path, url, "auto")) as server:
        with anyio.fail_after(20):
            result = await server.call_tool("analyze", {"text": "alone"})
    assert not result.is_error, result.content
    assert fake.chat_count == 1


async def test_the_shim_sends_the_token_and_a_wrong_one_is_named(
    fake: FakeProvider, tmp_path: Path
):
    settings = settings_for(fake, tmp_path, EXAI_HTTP_TOKEN=TOKEN)
    async with http_server(settings) as daemon:
        right = shim_env(fake, tmp_path, daemon.url, "require", EXAI_HTTP_TOKEN=TOKEN)
        wrong = shim_env(fake, tmp_path, daemon.url, "require", EXAI_HTTP_TOKEN="not-the-token")
        with anyio.fail_after(30):
            async with Client(right) as shim:
                good = await shim.call_tool("analyze", {"text": "with the token"})
            async with Client(wrong) as shim:
                bad = await shim.call_tool("analyze", {"text": "with another"})
    assert not good.is_error, good.content
    assert bad.is_error and "EXAI_HTTP_TOKEN" in bad.content[0].text
    assert TOKEN not in bad.content[0].text and "not-the-token" not in bad.content[0].text
    assert fake.chat_count == 1


# ----------------------------------------------------------------------------- spawn


@needs_proc
async def test_ten_shims_opening_at_once_start_exactly_one_daemon_which_exits_when_idle(
    fake: FakeProvider, tmp_path: Path
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    params = shim_env(fake, tmp_path, url, "spawn", EXAI_DAEMON_IDLE_EXIT_SECS=4)
    answers: dict[int, Any] = {}

    async def one_window(i: int) -> None:
        async with Client(params) as shim:
            answers[i] = await shim.call_tool("analyze", {"text": f"window {i}"})

    async with reaped_daemons(port):
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(one_window, i)
        assert len(daemons_on(port)) == 1
        assert all(not a.is_error for a in answers.values()), answers
        assert fake.chat_count == 10
        log = (tmp_path / f"daemon-{port}.log").read_text()
        assert log.count("listening on http://") == 1, log
        with anyio.fail_after(30):  # idle: no window left, no call
            while True:
                if not daemons_on(port):
                    break
                await anyio.sleep(0.1)
    assert "exiting (--idle-exit)" in (tmp_path / f"daemon-{port}.log").read_text()


@needs_proc
async def test_a_daemon_killed_during_a_call_is_an_error_within_2_s_then_the_next_call_works(
    fake: FakeProvider, tmp_path: Path
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with reaped_daemons(port), Client(shim_env(fake, tmp_path, url, "spawn")) as shim:
        with anyio.fail_after(60):
            first = await shim.call_tool("analyze", {"text": "starts the daemon"})
            assert not first.is_error, first.content
            (old_pid,) = daemons_on(port)
            fake.hold()
            result: dict[str, Any] = {}
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    result["reply"] = await shim.call_tool("analyze", {"text": "in flight"})
                    result["at"] = time.monotonic()

                tg.start_soon(call)
                await fake.wait_for_requests(2)
                killed_at = time.monotonic()
                os.kill(old_pid, signal.SIGKILL)
            fake.release()
            after = await shim.call_tool("analyze", {"text": "after the crash"})
            new = daemons_on(port)
    assert result["reply"].is_error
    text = result["reply"].content[0].text
    assert f"the exai-mcp daemon at {url} stopped answering during the call" in text, text
    assert result["at"] - killed_at < 2.0
    assert not after.is_error, after.content
    assert len(new) == 1 and new != [old_pid]


@needs_proc
async def test_a_call_refused_by_a_daemon_on_its_way_out_is_sent_to_a_new_one(
    fake: FakeProvider, tmp_path: Path
):
    """A daemon that drains (SIGTERM, or its idle exit) refuses new calls without starting
    them: in spawn mode the shim waits for it to go, starts another, and sends the call again."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    params = shim_env(fake, tmp_path, url, "spawn", EXAI_SHUTDOWN_GRACE_SECS=2)
    replies: dict[str, Any] = {}
    async with reaped_daemons(port), Client(params) as shim:
        with anyio.fail_after(90):
            assert not (await shim.call_tool("analyze", {"text": "starts it"})).is_error
            (old_pid,) = daemons_on(port)
            fake.hold()
            async with anyio.create_task_group() as tg:

                async def call(name: str) -> None:
                    replies[name] = await shim.call_tool("analyze", {"text": name})

                tg.start_soon(call, "held past the grace")
                await fake.wait_for_requests(2)
                os.kill(old_pid, signal.SIGTERM)
                async with httpx2.AsyncClient(base_url=url) as http:
                    while True:  # polled: the daemon is another process
                        if (await http.get("/health")).json()["status"] == "draining":
                            break
                        await anyio.sleep(0.02)
                tg.start_soon(call, "sent while it drains")
                await fake.wait_for_requests(3)  # only a new daemon sends it on
                fake.release()
            new = daemons_on(port)
    assert replies["held past the grace"].is_error
    assert "shut down before this call finished" in replies["held past the grace"].content[0].text
    assert not replies["sent while it drains"].is_error, replies["sent while it drains"].content
    assert len(new) == 1 and new != [old_pid]


def test_spawn_refuses_a_daemon_url_it_cannot_start(tmp_path: Path):
    from exai_mcp.transports.daemon import Daemon

    remote = Daemon(url="http://10.0.0.7:8079", state_dir=tmp_path, idle_exit=900)
    assert "loopback" in (remote.spawn_problem() or "")
    assert (
        Daemon(url="http://127.0.0.1:8079", state_dir=tmp_path, idle_exit=0).spawn_problem() is None
    )


async def test_health_tells_which_process_answers(fake: FakeProvider, tmp_path: Path):
    async with (
        http_server(settings_for(fake, tmp_path)) as daemon,
        httpx2.AsyncClient(base_url=daemon.url) as http,
    ):
        body = (await http.get("/health")).json()
    assert body["pid"] == os.getpid()  # the app runs in this test's process
