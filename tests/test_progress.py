"""Progress while the model works, over stdio as a client sees it, and none after the result."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
from fake_provider import FakeProvider
from mcp import Client

from tests.conftest import in_process_client, provider_env, settings_for, stdio_params


async def test_progress_arrives_during_a_slow_call_and_stops_with_the_result(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()  # the model "thinks" until the test has seen a heartbeat
    fake.answer = "one two three four five six"
    fake.chunk_delay = 0.1
    events: list[tuple[float, str | None]] = []
    heartbeat = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        events.append((progress, message))
        if message and "(still working," in message:
            heartbeat.set()

    env = provider_env(fake, tmp_path, EXAI_PROGRESS_INTERVAL_SECS=0.2)
    async with Client(stdio_params(env)) as client, anyio.create_task_group() as tg:

        async def release_after_a_heartbeat() -> None:
            with anyio.fail_after(10):
                await heartbeat.wait()
            fake.release()

        tg.start_soon(release_after_a_heartbeat)
        result = await client.call_tool(
            "analyze", {"text": "slow one"}, progress_callback=on_progress
        )
        seen_at_result = len(events)
        await anyio.sleep(0.6)  # three intervals: a heartbeat would have fired by now
    assert not result.is_error
    messages = [m or "" for _, m in events]
    assert any(m.startswith("calling kimi:kimi-k2-0905-preview") for m in messages)
    assert any(re.search(r"\d+ tokens? received", m) for m in messages)
    progresses = [p for p, _ in events]
    assert progresses == sorted(progresses) and len(set(progresses)) == len(progresses)
    assert len(events) == seen_at_result  # nothing after the result


async def test_every_waiter_of_a_shared_call_gets_progress_on_its_own_token(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    settings = settings_for(fake, tmp_path, EXAI_PROGRESS_INTERVAL_SECS=0.1)
    seen: dict[int, list[str | None]] = {0: [], 1: [], 2: []}
    heard = {n: anyio.Event() for n in seen}
    async with in_process_client(settings) as client, anyio.create_task_group() as tg:
        for n in seen:

            async def call(n: int = n) -> None:
                async def on_progress(_p: float, _t: float | None, message: str | None) -> None:
                    seen[n].append(message)
                    if message and "calling" in message:
                        heard[n].set()

                await client.call_tool("analyze", {"text": "shared"}, progress_callback=on_progress)

            tg.start_soon(call)
        await fake.wait_for_requests(1)
        with anyio.fail_after(5):
            for event in heard.values():
                await event.wait()
        fake.release()
    assert fake.chat_count == 1
    assert all(any("calling kimi" in (m or "") for m in msgs) for msgs in seen.values())


async def test_waiting_for_a_permit_reports_the_position_in_line(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    settings = settings_for(fake, tmp_path, EXAI_KIMI_MAX_INFLIGHT=1)
    messages: list[str | None] = []
    first_message = anyio.Event()

    async def on_progress(_p: float, _t: float | None, message: str | None) -> None:
        messages.append(message)
        first_message.set()

    async with in_process_client(settings) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.call_tool, "analyze", {"text": "first"})
        await fake.wait_for_requests(1)
        tg.start_soon(
            lambda: client.call_tool("analyze", {"text": "second"}, progress_callback=on_progress)
        )
        with anyio.fail_after(5):
            await first_message.wait()
        fake.release()
    assert messages[0] == "waiting for a 'kimi' permit: 0 ahead in line"


async def test_a_thinking_model_shows_progress_while_it_reasons(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.reasoning = "weighing the options one by one"
    fake.answer = "Use WAL mode."
    messages: list[str] = []

    async def on_progress(_p: float, _t: float | None, message: str | None) -> None:
        messages.append(message or "")

    settings = settings_for(fake, tmp_path, EXAI_PROGRESS_INTERVAL_SECS=0.1)
    fake.chunk_delay = 0.06  # slower than the reporter's coalescing, so each phase is seen
    async with in_process_client(settings) as client:
        result = await client.call_tool(
            "analyze", {"text": "SQLite?", "model": "glm-4.6"}, progress_callback=on_progress
        )
    assert result.structured_content["analysis"] == "Use WAL mode."
    assert any(m.startswith("glm:glm-4.6 is thinking:") for m in messages), messages


async def test_a_client_that_sent_no_progress_token_gets_no_progress_ticker(
    fake: FakeProvider, tmp_path: Path, monkeypatch
) -> None:
    from mcp.server.session import ServerSession

    sent: list[str | None] = []
    original = ServerSession.report_progress

    async def counting(self, progress, total=None, message=None) -> None:  # type: ignore[no-untyped-def]
        sent.append(message)
        await original(self, progress, total, message)

    monkeypatch.setattr(ServerSession, "report_progress", counting)
    fake.latency = 0.3  # several progress intervals
    settings = settings_for(fake, tmp_path, EXAI_PROGRESS_INTERVAL_SECS=0.05)
    async with in_process_client(settings) as client:
        quiet = await client.call_tool("analyze", {"text": "no token"})
        assert sent == []  # no ticker ran for the client that did not ask

        async def on_progress(_p: float, _t: float | None, _m: str | None) -> None:
            pass

        await client.call_tool("analyze", {"text": "token"}, progress_callback=on_progress)
    assert not quiet.is_error
    assert sent  # the same server does tick for a client that asked
