"""A caller's new thread is written after its reply (store/pending.py).

What users rely on: the answer does not wait for the thread store, a follow-up always finds
the thread it continues, a stopping server keeps every thread it named, and a thread that
could not be saved is reported as such when a call names it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_provider import FakeProvider

from exai_mcp.errors import ThreadError
from exai_mcp.store.pending import PendingWrites
from exai_mcp.store.threads import MEMORY, NewThread, ThreadEditor, ThreadStore
from tests.conftest import in_process_client, settings_for

WAIT = 5.0  # every wait in these tests is bounded by this


async def analyze(client: Any, **args: Any) -> Any:
    result = await client.call_tool("analyze", {"model": "kimi-k2", **args})
    assert not result.is_error, result.content
    return result.structured_content


async def test_an_answer_does_not_wait_for_a_busy_thread_store(
    fake: FakeProvider, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path)
    async with in_process_client(settings) as client:
        await analyze(client, text="warm-up")  # the store is open and the schema set up
        blocker = sqlite3.connect(settings.state_db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with anyio.fail_after(WAIT / 2):  # the store would wait up to 5 s for the lock
                first = await analyze(client, text="what is 2+2?")
            thread_id = first["continuation_id"]
            async with anyio.create_task_group() as tg:
                follow_up: dict[str, Any] = {}

                async def ask_again() -> None:
                    follow_up.update(
                        await analyze(client, text="and 3+3?", continuation_id=thread_id)
                    )

                asked = fake.chat_count
                tg.start_soon(ask_again)
                await anyio.sleep(0.2)  # a window for a wrong early answer to show up in
                assert not follow_up  # it waits for the thread it continues to be written...
                assert fake.chat_count == asked  # ...before it asks the provider anything
                blocker.execute("ROLLBACK")
        finally:
            blocker.close()
    assert follow_up["continuation_id"] == thread_id
    history = fake.chat_requests[-1].body["messages"][-1]["content"]
    assert "what is 2+2?" in history  # the follow-up was asked with the first exchange


async def test_a_follow_up_sent_at_once_finds_its_thread(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        for n in range(5):  # bounded: each follow-up names a thread written moments ago
            first = await analyze(client, text=f"question {n}")
            second = await analyze(
                client, text=f"follow-up {n}", continuation_id=first["continuation_id"]
            )
            assert second["continuation_id"] == first["continuation_id"]


async def test_a_stopping_server_keeps_every_thread_it_named(
    fake: FakeProvider, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path)
    async with in_process_client(settings) as client:  # the server opens and closes its store
        ids = [(await analyze(client, text=f"q{n}"))["continuation_id"] for n in range(10)]
    store = ThreadStore(settings.state_db)
    try:
        for thread_id in ids:
            assert store.get(thread_id).steps[0].payload["question"].startswith("q")
    finally:
        store.close()


async def test_a_thread_whose_write_failed_is_named_as_unsaved_and_others_are_kept() -> None:
    def first_step(editor: ThreadEditor) -> object:
        return editor.append("analyze", {"digest": editor.thread.id})

    def refused(editor: ThreadEditor) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    with ThreadStore(MEMORY) as store:
        async with anyio.create_task_group() as tg:
            writes = PendingWrites(store, tg, defer=True, flush_delay=60.0)  # on demand only
            for thread_id, change in (("a", first_step), ("b", refused), ("c", first_step)):
                await writes.write_new(NewThread(thread_id, "analyze", None, change))
            with anyio.fail_after(WAIT):
                await writes.settled("c")  # at once, not after the delay
                with pytest.raises(ThreadError, match=r"'b' names a thread .*disk I/O error"):
                    await writes.settled("b")
                await writes.settled("a")
            assert [store.get(t).steps[0].payload["digest"] for t in "ac"] == ["a", "c"]
            with pytest.raises(ThreadError, match="unknown"):
                store.get("b")  # nothing of it was kept
            await writes.write_new(NewThread("d", "analyze", None, first_step))
            with anyio.fail_after(WAIT):
                await writes.drain()
            assert store.get("d").steps[0].payload["digest"] == "d"


async def test_without_deferral_a_new_thread_is_written_before_the_reply() -> None:
    # Servers sharing Redis: a follow-up may reach another server the moment the reply is out.
    def first_step(editor: ThreadEditor) -> object:
        return editor.append("analyze", {"digest": "first"})

    def refused(editor: ThreadEditor) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    with ThreadStore(MEMORY) as store:
        async with anyio.create_task_group() as tg:
            writes = PendingWrites(store, tg, defer=False)
            await writes.write_new(NewThread("a", "analyze", None, first_step))
            assert store.get("a").steps[0].payload["digest"] == "first"
            with pytest.raises(sqlite3.OperationalError):  # the caller's error, as before
                await writes.write_new(NewThread("b", "analyze", None, refused))


async def test_a_writer_that_falls_behind_holds_replies_back_not_memory(tmp_path: Path) -> None:
    # Each queued thread holds its answer. A client calling back to back can outrun the
    # writer (the event loop never idles to let the worker thread in), so past the cap a
    # reply waits for the writer instead of memory growing with every call.
    def first_step(editor: ThreadEditor) -> object:
        return editor.append("analyze", {"digest": editor.thread.id})

    path = tmp_path / "threads.sqlite3"
    with ThreadStore(path) as store:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer is stuck behind another process
        try:
            async with anyio.create_task_group() as tg:
                writes = PendingWrites(store, tg, defer=True, flush_delay=0.0, max_pending=3)
                with anyio.fail_after(WAIT / 2):
                    for thread_id in "abc":  # up to the cap: queued, the reply goes at once
                        await writes.write_new(NewThread(thread_id, "analyze", None, first_step))
                fourth = anyio.Event()

                async def write_fourth() -> None:
                    await writes.write_new(NewThread("d", "analyze", None, first_step))
                    fourth.set()

                tg.start_soon(write_fourth)
                await anyio.sleep(0.3)  # a window for it to be queued past the cap
                assert not fourth.is_set(), "a fourth thread was queued past the cap of 3"
                blocker.execute("ROLLBACK")
                with anyio.fail_after(WAIT):
                    await fourth.wait()
                    await writes.drain()
        finally:
            blocker.close()
        assert [store.get(t).steps[0].payload["digest"] for t in "abcd"] == list("abcd")


async def test_a_thread_id_queued_twice_is_refused_even_after_waiting_for_room(
    tmp_path: Path,
) -> None:
    # The check must hold when both writes waited for room: the second would otherwise
    # replace the first's pending mark, and its failed create would name a saved thread.
    def first_step(editor: ThreadEditor) -> object:
        return editor.append("analyze", {"digest": editor.thread.id})

    path = tmp_path / "threads.sqlite3"
    refused: list[ValueError] = []
    with ThreadStore(path) as store:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            async with anyio.create_task_group() as tg:
                writes = PendingWrites(store, tg, defer=True, flush_delay=0.0, max_pending=2)
                for thread_id in "ab":
                    await writes.write_new(NewThread(thread_id, "analyze", None, first_step))

                async def write_x() -> None:
                    try:
                        await writes.write_new(NewThread("x", "analyze", None, first_step))
                    except ValueError as exc:
                        refused.append(exc)

                tg.start_soon(write_x)
                tg.start_soon(write_x)
                await anyio.sleep(0.2)  # both wait for room
                blocker.execute("ROLLBACK")
                with anyio.fail_after(WAIT):
                    await writes.drain()
        finally:
            blocker.close()
        assert len(refused) == 1 and "already has a pending write" in str(refused[0])
        assert store.get("x").steps[0].payload["digest"] == "x"
