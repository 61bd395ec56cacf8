"""Cancelled callers leave a shared execution; the provider request stops only when nobody waits."""

from __future__ import annotations

from pathlib import Path

import anyio
from fake_provider import FakeProvider, Reply
from mcp import Client

from tests.conftest import (
    call_and_give_up_once_the_provider_has_it,
    in_process_client,
    nothing_held,
    provider_env,
    settings_for,
    stdio_params,
    wait_for_status,
)


async def test_one_waiter_cancelled_the_others_still_get_the_result(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    results: list = []
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        async with anyio.create_task_group() as tg:
            leaver = anyio.CancelScope()

            async def leaving_call() -> None:
                with leaver:
                    await client.call_tool("analyze", {"text": "q"})

            async def staying_call() -> None:
                results.append(await client.call_tool("analyze", {"text": "q"}))

            tg.start_soon(leaving_call)
            tg.start_soon(staying_call)
            tg.start_soon(staying_call)
            await fake.wait_for_requests(1)
            await wait_for_status(client, lambda s: s["calls"]["coalesced_waiters"] == 2)
            leaver.cancel()
            await wait_for_status(client, lambda s: s["inflight"] == 1)
            fake.release()
        status = await wait_for_status(client, nothing_held)
    assert len(results) == 2 and not any(r.is_error for r in results)
    assert fake.chat_count == 1 and fake.disconnects == 0
    assert status["inflight"] == 0


async def test_all_waiters_gone_aborts_the_provider_request_after_the_grace_period(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    settings = settings_for(fake, tmp_path, EXAI_CANCEL_GRACE_SECS=0.2)
    async with in_process_client(settings) as client:
        await call_and_give_up_once_the_provider_has_it(client, fake, {"text": "q"})
        # Nobody waits now; within the grace period the execution goes on.
        assert fake.disconnects == 0
        await fake.wait_for_disconnects(1, timeout=5)
        status = await wait_for_status(client, nothing_held)
    assert status["inflight"] == 0 and fake.chat_count == 1


async def test_a_retry_within_the_grace_period_joins_the_running_execution(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    settings = settings_for(fake, tmp_path, EXAI_CANCEL_GRACE_SECS=30)
    async with in_process_client(settings) as client:
        await call_and_give_up_once_the_provider_has_it(client, fake, {"text": "q"})
        # The client timed out and retries the same call: it joins, nothing is paid twice.
        async with anyio.create_task_group() as tg:
            retried: list = []

            async def retry() -> None:
                retried.append(await client.call_tool("analyze", {"text": "q"}))

            tg.start_soon(retry)
            await wait_for_status(client, lambda s: s["calls"]["coalesced_waiters"] == 1)
            fake.release()
    assert not retried[0].is_error
    assert fake.chat_count == 1 and fake.disconnects == 0


async def test_grace_zero_cancels_at_once(fake: FakeProvider, tmp_path: Path) -> None:
    fake.hold()
    settings = settings_for(fake, tmp_path, EXAI_CANCEL_GRACE_SECS=0)
    async with in_process_client(settings) as client:
        await call_and_give_up_once_the_provider_has_it(client, fake, {"text": "q"})
        await fake.wait_for_disconnects(1, timeout=2)
        await wait_for_status(client, nothing_held)


async def test_a_cancelled_stdio_call_stops_the_provider_request_and_holds_nothing(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(hang=True))
    env = provider_env(fake, tmp_path, EXAI_CANCEL_GRACE_SECS=0)
    async with Client(stdio_params(env)) as client:
        # Cancelling makes the SDK send notifications/cancelled for the request.
        await call_and_give_up_once_the_provider_has_it(client, fake, {"text": "never answered"})
        await fake.wait_for_disconnects(1, timeout=5)
        status = await wait_for_status(client, nothing_held)
    assert status["providers"]["kimi"]["requests"] == 1
    assert all(not lim["holders"] for lim in status["limits"].values())


async def test_a_caller_who_joins_late_gets_its_own_full_deadline(
    fake: FakeProvider, tmp_path: Path
) -> None:
    # T=3: the first caller's provider path ends at 3 s, its deadline at 5 s. The first
    # attempt hangs until its 3 s attempt timeout; a retry joining at 2.5 s gives the shared
    # execution until 7.5 s, room for a second attempt, which answers.
    fake.enqueue(Reply(hang=True))
    settings = settings_for(fake, tmp_path, WORKFLOW_TOOL_TIMEOUT_SECS=3)
    results: dict[str, object] = {}
    async with in_process_client(settings) as client, anyio.create_task_group() as tg:

        async def call(who: str) -> None:
            results[who] = await client.call_tool("analyze", {"text": "slow"})

        tg.start_soon(call, "first")
        await fake.wait_for_requests(1)
        await anyio.sleep(2.5)
        tg.start_soon(call, "late")
        await wait_for_status(client, lambda s: s["calls"]["coalesced_waiters"] == 1)
    late = results["late"]
    assert not late.is_error, late.content  # type: ignore[attr-defined]
    assert fake.chat_count == 2
    assert not results["first"].is_error  # type: ignore[attr-defined]
