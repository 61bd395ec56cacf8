"""Callers that share one answer never share a thread; retries and concurrent steps lose nothing.

On a shared server, one user's conversation must never reach another: two callers asking the
same question share the provider call and its answer, but each gets a thread of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from fake_provider import FakeProvider

from exai_mcp.store.threads import ThreadStore
from tests.conftest import in_process_client, settings_for
from tests.test_cancellation import call_and_give_up_once_the_provider_has_it


def stored(tmp_path: Path) -> ThreadStore:
    return ThreadStore(tmp_path / "state.sqlite3")


def thread_count(tmp_path: Path) -> int:
    with stored(tmp_path) as store:
        return store._conn.execute("SELECT COUNT(*) FROM threads").fetchone()[0]


async def test_callers_sharing_one_answer_each_get_their_own_thread(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    results: list[Any] = []
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        async with anyio.create_task_group() as tg:
            for _ in range(2):

                async def ask() -> None:
                    results.append(await client.call_tool("analyze", {"text": "same question"}))

                tg.start_soon(ask)
            await fake.wait_for_requests(1)
            await anyio.wait_all_tasks_blocked()
            fake.release()
        cached = await client.call_tool("analyze", {"text": "same question"})
        first, second = (r.structured_content for r in results)
        follow_up = await client.call_tool(
            "analyze", {"text": "a private follow-up", "continuation_id": first["continuation_id"]}
        )
    assert not follow_up.is_error
    assert fake.chat_count == 2  # the shared call and the follow-up
    assert cached.structured_content["cached"] is True
    ids = {
        first["continuation_id"],
        second["continuation_id"],
        cached.structured_content["continuation_id"],
    }
    assert len(ids) == 3
    with stored(tmp_path) as store:
        assert len(store.get(first["continuation_id"]).steps) == 2
        assert len(store.get(second["continuation_id"]).steps) == 1  # untouched by the follow-up
        assert len(store.get(cached.structured_content["continuation_id"]).steps) == 1


async def test_a_retried_follow_up_is_answered_once_and_stored_once(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        start = await client.call_tool("analyze", {"text": "first question"})
        thread_id = start.structured_content["continuation_id"]
        args = {"text": "the follow-up", "continuation_id": thread_id}
        answered = await client.call_tool("analyze", args)
        retried = await client.call_tool("analyze", args)
    assert fake.chat_count == 2
    assert retried.structured_content["cached"] is True
    assert retried.structured_content["analysis"] == answered.structured_content["analysis"]
    assert retried.structured_content["continuation_id"] == thread_id
    with stored(tmp_path) as store:
        assert [s.payload["question"] for s in store.get(thread_id).steps] == [
            "first question",
            "the follow-up",
        ]


async def test_a_retried_one_step_workflow_leaves_no_orphan_thread(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    step = {
        "kind": "thinkdeep",
        "step": "decide",
        "step_number": 1,
        "total_steps": 1,
        "next_step_required": False,
        "findings": "two options",
    }
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        # The client gives up on its first try, then retries while the expert still works.
        await call_and_give_up_once_the_provider_has_it(client, fake, step, tool="workflow")
        async with anyio.create_task_group() as tg:

            async def release_when_joined() -> None:
                await anyio.wait_all_tasks_blocked()
                fake.release()

            tg.start_soon(release_when_joined)
            retried = await client.call_tool("workflow", step)
    assert not retried.is_error, retried.content
    assert fake.chat_count == 1
    assert thread_count(tmp_path) == 1
    with stored(tmp_path) as store:
        thread = store.get(retried.structured_content["continuation_id"])
        assert thread.steps[0].payload["expert"]["text"]


async def test_workflow_steps_sent_at_once_are_all_kept(fake: FakeProvider, tmp_path: Path) -> None:
    def step(n: int, thread_id: str | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {
            "kind": "debug",
            "step": f"step {n}",
            "step_number": n,
            "total_steps": 4,
            "next_step_required": True,
            "findings": f"found {n}",
        }
        if thread_id:
            args["continuation_id"] = thread_id
        return args

    thread_ids: list[str] = []
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        for _ in range(20):
            first = await client.call_tool("workflow", step(1))
            thread_id = first.structured_content["continuation_id"]
            thread_ids.append(thread_id)
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "workflow", step(2, thread_id))
                tg.start_soon(client.call_tool, "workflow", step(3, thread_id))
    with stored(tmp_path) as store:
        counts = [len(store.get(t).steps) for t in thread_ids]
    assert counts == [3] * 20
