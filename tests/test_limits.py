"""Concurrency limits: never more than allowed at the provider, FIFO, no permit ever leaks."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from fake_provider import FakeProvider

from exai_mcp.errors import BusyError
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.middleware.limits import Holder, TrackedLimiter
from tests.conftest import (
    in_process_client,
    nothing_held,
    read_status,
    settings_for,
    settings_for_two,
    wait_for_status,
)


async def test_distinct_calls_never_exceed_the_provider_limit(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    settings = settings_for(
        fake, tmp_path, EXAI_KIMI_MAX_INFLIGHT=4, EXAI_CLIENT_MAX_INFLIGHT=100
    )  # one session sends all 100
    results: list = []
    async with in_process_client(settings) as client:
        async with anyio.create_task_group() as tg:
            for i in range(100):

                async def call(i: int = i) -> None:
                    results.append(await client.call_tool("analyze", {"text": f"q{i}"}))

                tg.start_soon(call)
            await fake.wait_for_active(4)
            await wait_for_status(client, lambda s: s["limits"]["kimi"]["waiting"] == 96)
            assert fake.active == 4  # the other 96 wait for a permit, not at the provider
            fake.release()
        status = await read_status(client)
    assert len(results) == 100 and not any(r.is_error for r in results)
    assert fake.chat_count == 100
    assert fake.max_active == 4
    assert nothing_held(status)


async def test_holders_are_known_while_they_hold(fake: FakeProvider, tmp_path: Path) -> None:
    fake.hold()
    async with (
        in_process_client(settings_for(fake, tmp_path)) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.call_tool, "analyze", {"text": "q"})
        await fake.wait_for_requests(1)
        status = await read_status(client)
        fake.release()
    kimi = status["limits"]["kimi"]
    assert kimi["in_use"] == 1 and len(kimi["holders"]) == 1
    assert kimi["holders"][0]["tool"] == "analyze" and kimi["holders"][0]["provider"] == "kimi"
    assert status["limits"]["global"]["in_use"] == 1


async def test_a_permit_wait_past_the_deadline_is_busy_with_how_long_and_how_many_ahead() -> None:
    limiter = TrackedLimiter("kimi", 1)
    release = anyio.Event()

    async def hold_until_released() -> None:
        async with limiter.hold(Holder("r1", "analyze", "kimi"), Deadline.after(10)):
            await release.wait()

    messages: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_until_released)
        await anyio.lowlevel.checkpoint()
        with pytest.raises(BusyError) as info:
            async with limiter.hold(
                Holder("r2", "analyze", "kimi"), Deadline.after(0.1), on_wait=messages.append
            ):
                pass
        release.set()
    assert "waited 0.1 s for a 'kimi' permit" in str(info.value)
    assert "0 were ahead" in str(info.value)
    assert messages == ["waiting for a 'kimi' permit: 0 ahead in line"]
    assert limiter.in_use() == 0 and limiter.holders() == []


async def test_under_the_requests_own_deadline_the_wait_still_says_it_was_for_a_permit() -> None:
    """The pipeline enforces the same deadline around the wait: the caller must learn it
    waited for a permit, not only that its request timed out."""
    limiter = TrackedLimiter("kimi", 1)
    release = anyio.Event()

    async def hold_until_released() -> None:
        async with limiter.hold(Holder("r1", "analyze", "kimi"), Deadline.after(10)):
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_until_released)
        await anyio.lowlevel.checkpoint()
        deadline = Deadline.after(0.2)
        with (
            pytest.raises(BusyError, match="for a 'kimi' permit"),
            deadline.enforce("the analyze request"),
        ):
            async with limiter.hold(Holder("r2", "analyze", "kimi"), deadline):
                pass
        release.set()


async def test_waiters_are_served_first_come_first_served() -> None:
    limiter = TrackedLimiter("global", 1)
    order: list[int] = []
    gate = anyio.Event()

    async def take(n: int) -> None:
        async with limiter.hold(Holder(f"r{n}", "analyze", None), Deadline.after(10)):
            order.append(n)
            await gate.wait()

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(take, n)
            await anyio.lowlevel.checkpoint()  # each queues before the next starts
        gate.set()
    assert order == [0, 1, 2, 3, 4]


async def test_a_permit_is_released_on_error_and_on_cancellation() -> None:
    limiter = TrackedLimiter("glm", 2)
    with pytest.raises(RuntimeError):
        async with limiter.hold(Holder("r1", "analyze", "glm"), Deadline.after(10)):
            raise RuntimeError("boom")
    with anyio.move_on_after(0.01):
        async with limiter.hold(Holder("r2", "analyze", "glm"), Deadline.after(10)):
            await anyio.sleep(10)
    assert limiter.in_use() == 0 and limiter.holders() == [] and limiter.borrowers() == 0


async def test_a_queue_at_one_provider_never_blocks_a_call_to_the_other(
    fake: FakeProvider, glm_fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    settings = settings_for_two(
        fake, glm_fake, tmp_path, EXAI_MAX_INFLIGHT=4, EXAI_KIMI_MAX_INFLIGHT=1
    )
    async with in_process_client(settings) as client, anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(client.call_tool, "analyze", {"text": f"kimi {i}", "model": "kimi-k2"})
        await fake.wait_for_requests(1)
        await wait_for_status(client, lambda s: s["limits"]["kimi"]["waiting"] == 3)
        with anyio.fail_after(5):  # today: as long as the Kimi call it queued behind
            glm = await client.call_tool("analyze", {"text": "glm", "model": "glm-4.6"})
        status = await read_status(client)
        fake.release()
    assert not glm.is_error, glm.content
    assert status["limits"]["global"]["in_use"] == 1  # only the running Kimi call holds it
