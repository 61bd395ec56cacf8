"""EXAI_SESSION_MAX_PENDING: what one session may leave unanswered is bounded, in calls and in
memory, even when the client sends without reading its replies."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_provider import FakeProvider
from mcp import Client
from mcp_types import JSONRPCRequest, JSONRPCResponse

from exai_mcp.config import load_settings
from exai_mcp.errors import ConfigError
from exai_mcp.transports.intake import SessionIntake
from tests.conftest import message, provider_env, raw_stdio_server, stdio_params

FLOOD = 3_000  # identical calls, all answered from the result cache
ANSWER = "word " * 4_000  # a 20 kB answer: what each unread reply holds in memory
RSS_TOLERANCE_MIB = 30
STALL = 1.0  # seconds without a line written: the client's writes are blocked
FLOOD_WAIT = 15.0  # seconds to write the flood, or to find it blocked
DRAIN_WAIT = 30.0
REPLY_WAIT = 10.0
BUSY_MARK = "EXAI_SESSION_MAX_PENDING"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def reply(stdout: asyncio.StreamReader) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(stdout.readline(), REPLY_WAIT))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
async def test_a_client_that_does_not_read_its_replies_is_not_read_either_and_memory_returns(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.answer = ANSWER
    call = {"name": "analyze", "arguments": {"text": "the same question"}}
    async with raw_stdio_server(provider_env(fake, tmp_path), tmp_path) as server:
        assert server.stdin is not None and server.stdout is not None
        stdin, stdout = server.stdin, server.stdout
        stdin.write(message(1, "tools/call", call))  # warms the cache
        await stdin.drain()
        assert not (await reply(stdout))["result"]["isError"]
        await asyncio.sleep(0.3)
        start = rss_mib(server.pid)

        written = 0

        async def flood() -> None:
            nonlocal written
            for request_id in range(2, FLOOD + 2):
                stdin.write(message(request_id, "tools/call", call))
                await stdin.drain()
                written += 1

        writer = asyncio.create_task(flood())
        stuck, last, still = start, -1, 0.0
        with anyio.move_on_after(FLOOD_WAIT):
            while not writer.done() and still < STALL:  # until written, or blocked for STALL
                await asyncio.sleep(0.1)
                stuck = max(stuck, rss_mib(server.pid))
                still = still + 0.1 if written == last else 0.0
                last = written
        blocked = not writer.done()

        answers: dict[int, list[dict[str, Any]]] = {}
        with anyio.fail_after(DRAIN_WAIT):
            while len(answers) < FLOOD:
                answer = json.loads(await stdout.readline())
                answers.setdefault(answer["id"], []).append(answer)
            await writer
        await asyncio.sleep(0.5)
        after = rss_mib(server.pid)

    numbers = (
        f"RSS start {start:.0f} MiB, stuck {stuck:.0f} MiB, after draining {after:.0f} MiB; "
        f"{written} of {FLOOD} calls written before the client blocked"
    )
    assert stuck < start + RSS_TOLERANCE_MIB, numbers
    assert after < start + RSS_TOLERANCE_MIB, numbers
    assert blocked, f"the server read every line although no reply was read: {numbers}"
    assert sorted(answers) == list(range(2, FLOOD + 2))
    assert all(len(replies) == 1 for replies in answers.values()), "a call answered twice"
    results = [replies[0]["result"] for replies in answers.values()]
    busy = [r for r in results if r["isError"]]
    assert all(BUSY_MARK in r["content"][0]["text"] for r in busy)
    assert busy, "the cap was never reached"
    assert len(busy) < FLOOD


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_call_beyond_the_cap_is_refused_at_once_naming_the_variable(
    fake: FakeProvider, tmp_path: Path, mode: str
) -> None:
    env = provider_env(fake, tmp_path, EXAI_SESSION_MAX_PENDING=1)
    fake.hold()
    async with Client(stdio_params(env), mode=mode) as client:
        held: list[Any] = []

        async def held_call() -> None:
            held.append(await client.call_tool("analyze", {"text": "slow"}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(held_call)
            await fake.wait_for_active(1)
            with anyio.fail_after(5):  # refused at once, while the first call still runs
                busy = await client.call_tool("analyze", {"text": "another"})
            fake.release()

    assert busy.is_error
    text = busy.content[0].text
    assert "EXAI_SESSION_MAX_PENDING=1" in text and "Wait for the replies" in text
    assert not held[0].is_error
    assert len(fake.chat_requests) == 1  # the refused call never ran


async def test_a_cancelled_call_frees_its_place(fake: FakeProvider, tmp_path: Path) -> None:
    env = provider_env(fake, tmp_path, EXAI_SESSION_MAX_PENDING=1)
    fake.hold()
    async with Client(stdio_params(env), mode="legacy") as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "analyze", {"text": "abandoned"})
            await fake.wait_for_active(1)
            tg.cancel_scope.cancel()  # the client sends notifications/cancelled

        # The cancelled call gets no reply, yet its place is freed.
        with anyio.fail_after(5):
            while (status := await client.call_tool("status", {})).is_error:
                assert BUSY_MARK in status.content[0].text
                await anyio.sleep(0.02)
        fake.release()
        result = await client.call_tool("analyze", {"text": "next"})

    assert not result.is_error


async def test_a_refusal_for_a_reused_id_does_not_free_the_call_that_holds_it(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    call = {"name": "analyze", "arguments": {"text": "slow"}}
    async with raw_stdio_server(
        provider_env(fake, tmp_path, EXAI_SESSION_MAX_PENDING=1), tmp_path
    ) as server:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(message(5, "tools/call", call))
        await server.stdin.drain()
        await fake.wait_for_active(1)
        server.stdin.write(message(5, "tools/call", call))  # the id of the call in flight
        server.stdin.write(message(6, "tools/call", call))
        await server.stdin.drain()
        refused = [await reply(server.stdout) for _ in range(2)]
        fake.release()
        answered = await reply(server.stdout)

    assert [r["id"] for r in refused] == [5, 6]
    assert all(r["result"]["isError"] for r in refused)
    assert answered["id"] == 5 and not answered["result"]["isError"]
    assert len(fake.chat_requests) == 1


def request(request_id: int, method: str) -> JSONRPCRequest:
    return JSONRPCRequest(jsonrpc="2.0", id=request_id, method=method)


async def test_other_requests_pass_the_cap_but_hold_the_reader_at_twice_the_cap() -> None:
    intake = SessionIntake(max_pending=1)
    intake.admit(request(1, "tools/call"))

    assert intake.refusal(request(2, "tools/call")) is not None
    assert intake.refusal(request(3, "tools/list")) is None
    intake.admit(request(3, "tools/list"))  # two unanswered: the reader must wait

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            room = anyio.Event()

            async def reader() -> None:
                await intake.wait_for_room()
                room.set()

            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            assert not room.is_set()
            intake.delivering(JSONRPCResponse(jsonrpc="2.0", id=3, result={}))
            await room.wait()

    assert intake.unanswered == 1
    intake.delivering(JSONRPCResponse(jsonrpc="2.0", id=3, result={}))  # not counted twice
    assert intake.unanswered == 1


@pytest.mark.parametrize("value", ["0", "10001", "many"])
def test_the_cap_is_validated(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("EXAI_SESSION_MAX_PENDING", value)

    with pytest.raises(ConfigError, match="EXAI_SESSION_MAX_PENDING"):
        load_settings()


def test_the_cap_defaults_to_64() -> None:
    assert load_settings().session_max_pending == 64
