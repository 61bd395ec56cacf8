"""Several exai-mcp processes on one Redis behave as one server.

Real `exai-mcp serve --http` processes, a real redis-server and the bundled fake provider
(in this test's process, so it counts every request and its peak concurrency).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import redis.asyncio
from anyio.abc import Process
from fake_provider import FakeProvider

from tests.conftest import provider_env
from tests.redis_server import RedisServer

LEASE = 1.0  # EXAI_REDIS_LEASE_SECS in these tests: what a killed process holds lapses this fast
START_TIMEOUT = 30


@dataclass
class Server:
    process: Process
    url: str
    stderr: list[str] = field(default_factory=list)

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.url, timeout=30)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)


def server_env(fake: FakeProvider, tmp_path: Path, name: str, **extra: Any) -> dict[str, str]:
    """Each server has its own SQLite file: only Redis can carry a thread between them."""
    empty = tmp_path / "none.env"
    empty.touch()
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "EXAI_LOG_LEVEL": "INFO",
        "EXAI_ENV_FILE": str(empty),
        **provider_env(fake, tmp_path, EXAI_STATE_DB=str(tmp_path / f"{name}.sqlite3")),
        **{k: str(v) for k, v in extra.items()},
    }


@asynccontextmanager
async def servers(
    fake: FakeProvider,
    tmp_path: Path,
    redis: RedisServer,
    prefix: str,
    count: int = 2,
    **extra: Any,
) -> AsyncIterator[list[Server]]:
    """`count` servers on one Redis, each listening on an ephemeral port; killed after."""
    settings = {"EXAI_REDIS_URL": redis.url, "EXAI_REDIS_PREFIX": prefix,
                "EXAI_REDIS_LEASE_SECS": LEASE, "EXAI_REDIS_TIMEOUT_SECS": 0.5, **extra}  # fmt: skip
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        running: list[Server] = []
        for n in range(count):
            process = await anyio.open_process(
                [sys.executable, "-m", "exai_mcp", "serve", "--http", "--port", "0"],
                env=server_env(fake, tmp_path, f"s{n}", **settings),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            stack.push_async_callback(_reap, process)
            server = Server(process, "")
            listening = anyio.Event()
            tg.start_soon(_read_stderr, server, listening)
            with anyio.fail_after(START_TIMEOUT):
                await listening.wait()
            running.append(server)
        try:
            yield running
        finally:
            tg.cancel_scope.cancel()


async def _read_stderr(server: Server, listening: anyio.Event) -> None:
    assert server.process.stderr is not None
    buffer = ""
    async for chunk in server.process.stderr:
        buffer += chunk.decode(errors="replace")
        *lines, buffer = buffer.split("\n")
        for line in lines:
            server.stderr.append(line)
            if "listening on http://" in line and not server.url:
                server.url = line.split("listening on ", 1)[1].strip()
                listening.set()


async def _reap(process: Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.kill()
        with anyio.move_on_after(10):
            await process.wait()


async def call(server: Server, text: str, **arguments: Any) -> dict[str, Any]:
    async with server.http() as http:
        reply = await http.post(
            "/api/v1/execute", json={"tool": "analyze", "arguments": {"text": text, **arguments}}
        )
    return dict(reply.json())


async def doomed(server: Server, text: str, **arguments: Any) -> None:
    """A call on a server the test kills: its connection just drops."""
    with contextlib.suppress(httpx2.TransportError):
        await call(server, text, **arguments)


async def tool(server: Server, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    async with server.http() as http:
        reply = await http.post("/api/v1/execute", json={"tool": name, "arguments": arguments})
    return dict(reply.json())


def text_of(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])


# ----------------------------------------------------------------------------- dedup and cache


async def test_ten_identical_calls_on_two_servers_make_one_provider_request_then_a_cache_hit(
    fake: FakeProvider, tmp_path: Path, redis_server: RedisServer, redis_prefix: str
) -> None:
    fake.latency = 0.5
    async with servers(fake, tmp_path, redis_server, redis_prefix) as (a, b):
        results: list[dict[str, Any]] = []

        async def one(server: Server) -> None:
            results.append(await call(server, "the same question"))

        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(one, (a, b)[n % 2])
        assert all(not r["isError"] for r in results), results
        assert fake.chat_count == 1
        assert len({r["structuredContent"]["analysis"] for r in results}) == 1
        again = await call(b, "the same question")
        assert again["structuredContent"]["cached"] is True
        assert fake.chat_count == 1


# ----------------------------------------------------------------------------- limits


async def test_a_limit_of_two_holds_across_two_servers(
    fake: FakeProvider, tmp_path: Path, redis_server: RedisServer, redis_prefix: str
) -> None:
    fake.latency = 0.3
    async with servers(fake, tmp_path, redis_server, redis_prefix, EXAI_KIMI_MAX_INFLIGHT=2) as (
        a,
        b,
    ):
        results: list[dict[str, Any]] = []
        seen: list[dict[str, Any]] = []

        async def one(server: Server, n: int) -> None:
            results.append(await call(server, f"question {n}", model="kimi"))

        async def watch() -> None:
            await fake.wait_for_active(2)
            seen.append((await tool(a, "status", {}))["structuredContent"]["shared"])
            async with b.http() as http:
                seen.append((await http.get("/health")).json()["redis"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            for n in range(8):
                tg.start_soon(one, (a, b)[n % 2], n)
        assert all(not r["isError"] for r in results), results
        assert fake.chat_count == 8
        assert fake.max_active == 2
        kimi = seen[0]["limits"]["kimi"]
        assert kimi["limit"] == 2 and 1 <= kimi["in_use"] <= 2
        assert all("server" in h and "request_id" in h for h in kimi["holders"])
        assert seen[0]["state"] == "shared" and "password" not in str(seen[0])
        on_health = seen[1]["limits"]["kimi"]  # /health on the other server sees them too
        assert on_health["limit"] == 2 and all("server" in h for h in on_health["holders"])


async def test_a_killed_permit_holder_gives_its_permit_back_within_the_lease(
    fake: FakeProvider, tmp_path: Path, redis_server: RedisServer, redis_prefix: str
) -> None:
    async with servers(fake, tmp_path, redis_server, redis_prefix, EXAI_KIMI_MAX_INFLIGHT=1) as (
        a,
        b,
    ):
        fake.hold()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: doomed(a, "held by a", model="kimi"))
            await fake.wait_for_active(1)
            a.kill()  # holds the only kimi permit; frees nothing by hand
            await a.process.wait()
            fake.release()
            started = time.monotonic()
            with anyio.fail_after(LEASE + 5):
                result = await call(b, "asked on b", model="kimi")
            tg.cancel_scope.cancel()
        assert not result["isError"], result
        assert time.monotonic() - started < LEASE + 1.5


# ----------------------------------------------------------------------------- single-flight


async def test_a_killed_single_flight_leader_is_replaced_by_a_waiter_within_the_lease(
    fake: FakeProvider, tmp_path: Path, redis_server: RedisServer, redis_prefix: str
) -> None:
    async with servers(fake, tmp_path, redis_server, redis_prefix) as (a, b):
        fake.hold()
        got: list[dict[str, Any]] = []
        answered = anyio.Event()

        async def on_b() -> None:
            got.append(await call(b, "one question"))
            answered.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(doomed, a, "one question")
            await fake.wait_for_active(1)  # a leads
            tg.start_soon(on_b)
            await anyio.sleep(0.3)  # b waits for a's answer
            assert fake.chat_count == 1
            a.kill()
            await a.process.wait()
            fake.release()
            killed = time.monotonic()
            with anyio.fail_after(LEASE + 5):
                await answered.wait()
        assert not got[0]["isError"], got
        assert time.monotonic() - killed < LEASE + 1.5
        assert fake.chat_count == 2  # the dead leader's, and the one b took over


# ----------------------------------------------------------------------------- Redis restart


async def test_calls_go_on_degraded_while_redis_restarts_then_state_is_shared_again(
    fake: FakeProvider, tmp_path: Path, own_redis: RedisServer, redis_prefix: str
) -> None:
    async with servers(fake, tmp_path, own_redis, redis_prefix) as (a, b):
        assert not (await call(a, "before"))["isError"]
        await calls_at_once([a, b] * 5, "warm")  # each server's pool holds several connections
        own_redis.stop()
        started = time.monotonic()
        during = [await call(s, f"during {n}") for n, s in enumerate((a, b, a, b))]
        assert all(not r["isError"] for r in during), during
        assert time.monotonic() - started < 8  # no call hangs on the dead Redis
        async with a.http() as http:
            health = (await http.get("/health")).json()
        assert health["status"] == "degraded" and health["redis"]["state"] == "degraded"
        assert any("Redis" in p for p in health["problems"])
        status = (await tool(b, "status", {}))["structuredContent"]
        assert status["shared"]["state"] == "degraded"
        own_redis.start()
        with anyio.fail_after(10):  # both reconnect in the background
            for server in (a, b):
                await shared_again(server)
        requests = fake.chat_count
        assert not (await call(a, "after"))["isError"]
        assert (await call(b, "after"))["structuredContent"]["cached"] is True
        assert fake.chat_count == requests + 1
        # Every pooled connection the old Redis left is gone: none fails and degrades again.
        await calls_at_once([a, b] * 5, "after, at once")
        for server in (a, b):
            logged = [line for line in server.stderr if "going on with in-process state" in line]
            assert len(logged) == 1, server.stderr  # one outage, logged once


async def calls_at_once(targets: list[Server], text: str) -> None:
    async with anyio.create_task_group() as tg:
        for n, server in enumerate(targets):
            tg.start_soon(call, server, f"{text} {n}")


async def shared_again(server: Server) -> None:
    """Until the server's status says its state is shared again (at most 100 looks)."""
    for _ in range(100):
        status = (await tool(server, "status", {}))["structuredContent"]
        if status["shared"]["state"] == "shared":
            return
        await anyio.sleep(0.1)
    raise AssertionError("the server did not reconnect to Redis")


# ----------------------------------------------------------------------------- quota


async def test_an_rpm_quota_holds_across_two_servers_and_names_its_variable(
    fake: FakeProvider, tmp_path: Path, redis_server: RedisServer, redis_prefix: str
) -> None:
    # 6 a minute: the 7th call would wait 10 s, past its 2 s budget, so it fails at once.
    async with servers(
        fake, tmp_path, redis_server, redis_prefix, EXAI_KIMI_RPM=6, WORKFLOW_TOOL_TIMEOUT_SECS=2
    ) as (a, b):
        results = [await call((a, b)[n % 2], f"q{n}", model="kimi") for n in range(12)]
    refused = [r for r in results if r["isError"]]
    assert len(refused) == 6 and fake.chat_count == 6
    assert all("EXAI_KIMI_RPM=6" in text_of(r) for r in refused), refused[0]


# ----------------------------------------------------------------------------- threads


async def test_a_workflow_thread_moves_between_servers(
    fake: FakeProvider, tmp_path: Path, redis_server: RedisServer, redis_prefix: str
) -> None:
    def step(n: int, **extra: Any) -> dict[str, Any]:
        return {"kind": "debug", "step": f"step {n}", "step_number": n, "total_steps": 3,
                "next_step_required": n < 3, "findings": f"found {n}", **extra}  # fmt: skip

    async with servers(fake, tmp_path, redis_server, redis_prefix) as (a, b):
        first = await tool(a, "workflow", step(1))
        assert not first["isError"], first
        thread = first["structuredContent"]["continuation_id"]
        second = await tool(b, "workflow", step(2, continuation_id=thread))
        assert not second["isError"], second
        last = await tool(a, "workflow", step(3, continuation_id=thread))
    assert not last["isError"], last
    assert last["structuredContent"]["status"] == "complete"
    assert last["structuredContent"]["thread"]["steps"] == 3


async def test_an_analyze_thread_continues_at_once_on_another_server(
    fake: FakeProvider, tmp_path: Path, redis_server: RedisServer, redis_prefix: str
) -> None:
    # A new thread is written before the reply when servers share Redis: a client behind a
    # balancer may send its follow-up to the other server the moment it has the id.
    async with (
        servers(fake, tmp_path, redis_server, redis_prefix) as (a, b),
        contextlib.aclosing(redis.asyncio.Redis.from_url(redis_server.url)) as shared,
    ):
        for n in range(5):  # bounded
            first = await call(a, f"question {n}")
            thread = first["structuredContent"]["continuation_id"]
            assert await shared.exists(f"{redis_prefix}thread:{thread}")  # there with the reply
            second = await call(b, f"follow-up {n}", continuation_id=thread)
            assert not second["isError"], second
            assert second["structuredContent"]["continuation_id"] == thread


async def test_a_call_on_another_server_joins_an_execution_whose_caller_left_in_its_grace(
    fake: FakeProvider, tmp_path: Path, redis_server: RedisServer, redis_prefix: str
) -> None:
    async with servers(fake, tmp_path, redis_server, redis_prefix) as (a, b):
        fake.hold()
        with anyio.CancelScope() as gone:  # a's caller gives up once the provider has the call

            async def leave_when_asked() -> None:
                await fake.wait_for_active(1)
                gone.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(leave_when_asked)
                await call(a, "asked then abandoned")
        await anyio.sleep(0.3)  # a's execution goes on in its grace period (10 s)
        async with anyio.create_task_group() as tg:
            got: list[dict[str, Any]] = []

            async def on_b() -> None:
                got.append(await call(b, "asked then abandoned"))

            tg.start_soon(on_b)
            await anyio.sleep(0.3)
            fake.release()
        assert not got[0]["isError"], got
        assert fake.chat_count == 1  # b joined a's execution instead of paying again
