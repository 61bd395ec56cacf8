"""ThreadStore: the SQLite file behind continuation_id."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from exai_mcp.errors import InputError, StoreUnusable, ThreadError
from exai_mcp.shared.threads import RedisThreadStore
from exai_mcp.store import SCHEMA_VERSION, Step, Thread, ThreadStore, default_db_path
from exai_mcp.store.maintenance import run_maintenance
from exai_mcp.store.threads import NewThread, ThreadEditor, new_thread_id
from tests.redis_server import RedisServer


class FakeClock:
    """A clock the test moves by hand, so expiry needs no sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance_hours(self, hours: float) -> None:
        self.now += hours * 3600


MakeStore = Callable[..., ThreadStore]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    """Stores of one backend, made with the given options: the same rules hold for both."""
    made: list[ThreadStore] = []

    def make(**options: object) -> ThreadStore:
        if request.param == "sqlite":
            store = ThreadStore(":memory:", **options)  # type: ignore[arg-type]
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            prefix = request.getfixturevalue("redis_prefix")
            store = RedisThreadStore(server.url, prefix=prefix, **options)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture(params=["file", "memory", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ThreadStore]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        with RedisThreadStore(server.url, prefix=request.getfixturevalue("redis_prefix")) as s:
            yield s
        return
    path = tmp_path / "threads.sqlite3" if request.param == "file" else ":memory:"
    with ThreadStore(path) as s:
        yield s


def numbers(thread: Thread) -> list[int]:
    return [s.number for s in thread.steps]


def test_a_created_thread_is_read_back_unchanged(store: ThreadStore) -> None:
    created = store.create("workflow", "debug")
    got = store.get(created.id)
    assert got == created
    assert got.tool == "workflow"
    assert got.kind == "debug"
    assert got.steps == ()
    assert got.created_at == got.updated_at


def test_a_thread_without_kind_is_allowed(store: ThreadStore) -> None:
    assert store.get(store.create("analyze", None).id).kind is None


def test_recorded_steps_come_back_in_order_with_their_payloads(store: ThreadStore) -> None:
    t = store.create("workflow", "codereview")
    store.record_step(t.id, 1, "workflow", {"findings": "a", "files": ["x.py"]})
    got = store.record_step(t.id, 2, "workflow", {"findings": "b", "nested": {"k": [1, 2]}})
    assert numbers(got) == [1, 2]
    assert got.steps[0].payload == {"findings": "a", "files": ["x.py"]}
    assert got.steps[1].payload == {"findings": "b", "nested": {"k": [1, 2]}}
    assert isinstance(got.steps[0], Step)
    assert got.last_step_number == 2
    assert store.get(t.id) == got


def test_a_resent_step_is_stored_once_with_the_latest_payload(store: ThreadStore) -> None:
    t = store.create("workflow", "debug")
    store.record_step(t.id, 1, "workflow", {"try": 1})
    store.record_step(t.id, 2, "workflow", {"try": 1})
    got = store.record_step(t.id, 2, "workflow", {"try": 2})
    assert numbers(got) == [1, 2]
    assert got.steps[1].payload == {"try": 2}


def test_backtracking_drops_the_later_steps(store: ThreadStore) -> None:
    t = store.create("workflow", "debug")
    for n in range(1, 6):
        store.record_step(t.id, n, "workflow", {"n": n})
    got = store.record_step(t.id, 3, "workflow", {"n": "3 again"})
    assert numbers(got) == [1, 2, 3]
    assert got.steps[2].payload == {"n": "3 again"}
    assert numbers(store.get(t.id)) == [1, 2, 3]


def test_skipped_step_numbers_are_allowed(store: ThreadStore) -> None:
    t = store.create("workflow", "planner")
    store.record_step(t.id, 1, "workflow", {})
    assert numbers(store.record_step(t.id, 4, "workflow", {})) == [1, 4]


def test_append_step_records_after_the_last_step(store: ThreadStore) -> None:
    t = store.create("workflow", "debug")
    store.record_step(t.id, 1, "workflow", {})
    store.record_step(t.id, 3, "workflow", {})
    got = store.append_step(t.id, "analyze", {"question": "why?"})
    assert numbers(got) == [1, 3, 4]
    assert got.steps[-1].tool == "analyze"


def test_append_step_on_an_empty_thread_is_step_one(store: ThreadStore) -> None:
    t = store.create("analyze", None)
    assert numbers(store.append_step(t.id, "analyze", {})) == [1]


def test_update_step_payload_replaces_only_that_payload(store: ThreadStore) -> None:
    t = store.create("workflow", "secaudit")
    store.record_step(t.id, 1, "workflow", {"a": 1})
    store.record_step(t.id, 2, "workflow", {"b": 2})
    got = store.update_step_payload(t.id, 1, {"a": 1, "expert": {"verdict": "ok"}})
    assert numbers(got) == [1, 2]
    assert got.steps[0].payload == {"a": 1, "expert": {"verdict": "ok"}}
    assert got.steps[1].payload == {"b": 2}


def test_update_step_payload_of_a_missing_step_is_refused(store: ThreadStore) -> None:
    t = store.create("workflow", "debug")
    with pytest.raises(ThreadError, match="no step 3"):
        store.update_step_payload(t.id, 3, {})


def test_an_unknown_id_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    with ThreadStore(path) as s:
        with pytest.raises(ThreadError) as info:
            s.get("no-such-id")
        message = str(info.value)
        assert "continuation_id 'no-such-id' is unknown" in message
        assert f"EXAI_STATE_DB={path}" in message
        assert "start a new thread without continuation_id" in message
        with pytest.raises(ThreadError, match="is unknown"):
            s.record_step("no-such-id", 1, "workflow", {})
        with pytest.raises(ThreadError, match="is unknown"):
            s.append_step("no-such-id", "analyze", {})


def test_writing_to_an_unknown_id_never_creates_a_thread(store: ThreadStore) -> None:
    with pytest.raises(ThreadError):
        store.record_step("ghost", 1, "workflow", {})
    with pytest.raises(ThreadError, match="is unknown"):
        store.get("ghost")


def test_a_thread_expires_after_the_ttl_without_activity() -> None:
    clock = FakeClock()
    with ThreadStore(":memory:", ttl_hours=24, clock=clock) as s:
        t = s.create("workflow", "debug")
        clock.advance_hours(24.01)
        with pytest.raises(ThreadError) as info:
            s.get(t.id)
        assert "expired after EXAI_THREAD_TTL_HOURS=24 hours" in str(info.value)
        assert "start a new thread without continuation_id" in str(info.value)
        # A read deletes nothing: asking again says "expired" again, until maintain() runs.
        with pytest.raises(ThreadError, match="expired"):
            s.get(t.id)
        assert s.maintain().purged == 1
        with pytest.raises(ThreadError, match="is unknown"):
            s.get(t.id)


def test_each_step_restarts_the_ttl(make_store: MakeStore) -> None:
    clock = FakeClock()
    with make_store(ttl_hours=1, clock=clock) as s:
        t = s.create("workflow", "debug")
        for n in range(1, 5):
            clock.advance_hours(0.9)
            s.record_step(t.id, n, "workflow", {})
        clock.advance_hours(0.9)
        got = s.get(t.id)
        assert numbers(got) == [1, 2, 3, 4]
        assert got.updated_at > got.created_at


def test_purge_expired_deletes_only_expired_threads() -> None:
    clock = FakeClock()
    with ThreadStore(":memory:", ttl_hours=1, clock=clock) as s:
        old = s.create("workflow", "debug")
        clock.advance_hours(0.5)
        young = s.create("workflow", "debug")
        clock.advance_hours(0.6)
        assert s.purge_expired() == 1
        assert s.get(young.id).id == young.id
        with pytest.raises(ThreadError, match="is unknown"):
            s.get(old.id)


def test_maintain_purges_expired_threads_with_their_steps() -> None:
    clock = FakeClock()
    with ThreadStore(":memory:", ttl_hours=1, clock=clock) as s:
        old = s.create("workflow", "debug")
        s.record_step(old.id, 1, "workflow", {})
        clock.advance_hours(2)
        young = s.create("workflow", "debug")  # creating no longer purges: the timer does
        assert count_rows(s, "threads") == 2
        assert s.maintain().purged == 1
        assert s.purge_expired() == 0
        assert count_rows(s, "steps") == 0  # the steps went with their thread
        assert s.get(young.id).id == young.id


def test_a_thread_beyond_max_turns_is_refused_naming_the_variable(make_store: MakeStore) -> None:
    with make_store(max_turns=3) as small:
        t = small.create("workflow", "debug")
        for n in range(1, 4):
            small.record_step(t.id, n, "workflow", {})
        with pytest.raises(ThreadError) as info:
            small.record_step(t.id, 4, "workflow", {})
        assert "EXAI_MAX_THREAD_TURNS=3" in str(info.value)
        assert "start a new thread" in str(info.value)
        with pytest.raises(ThreadError, match="EXAI_MAX_THREAD_TURNS=3"):
            small.append_step(t.id, "analyze", {})
        # Replacing or backtracking within the limit is still fine.
        assert numbers(small.record_step(t.id, 3, "workflow", {"again": True})) == [1, 2, 3]
        assert numbers(small.record_step(t.id, 2, "workflow", {})) == [1, 2]
        assert numbers(small.get(t.id)) == [1, 2]


def test_bad_step_arguments_are_input_errors(store: ThreadStore) -> None:
    t = store.create("workflow", "debug")
    with pytest.raises(InputError, match="step_number"):
        store.record_step(t.id, 0, "workflow", {})
    with pytest.raises(InputError, match="step_number"):
        store.record_step(t.id, True, "workflow", {})
    with pytest.raises(InputError, match="JSON"):
        store.record_step(t.id, 1, "workflow", {"x": object()})
    with pytest.raises(InputError, match="tool"):
        store.create("", None)
    assert store.get(t.id).steps == ()


def test_a_thread_written_by_one_store_is_read_by_a_second_store_on_the_same_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nested" / "dir" / "threads.sqlite3"
    with ThreadStore(path) as first:
        t = first.create("workflow", "refactor")
        first.record_step(t.id, 1, "workflow", {"findings": "smells"})
    assert path.exists()
    with ThreadStore(path) as second:
        got = second.get(t.id)
        assert got.kind == "refactor"
        assert got.steps[0].payload == {"findings": "smells"}
        second.append_step(t.id, "analyze", {"q": "more"})
    with ThreadStore(path) as third:
        assert numbers(third.get(t.id)) == [1, 2]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_file_deleted_or_replaced_while_open_refuses_writes_it_would_lose(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "state.sqlite3"
    with ThreadStore(path) as store:
        thread = store.create("workflow", "debug")
        for leftover in tmp_path.glob("state.sqlite3*"):
            leftover.unlink()
        if how == "replaced":
            with ThreadStore(path):  # another, empty store now sits at the path
                pass
        with pytest.raises(StoreUnusable) as info:
            store.append_step(thread.id, "workflow", {"step": 2})
        assert str(info.value).startswith(f"EXAI_STATE_DB={path}: was deleted or replaced")
        assert "restart the server" in str(info.value)


def test_wal_mode_is_on_for_files_and_the_schema_version_is_set(tmp_path: Path) -> None:
    path = tmp_path / "threads.sqlite3"
    with ThreadStore(path) as s:
        assert s.journal_mode == "wal"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_opening_the_same_file_twice_keeps_the_schema_and_data(tmp_path: Path) -> None:
    path = tmp_path / "threads.sqlite3"
    a = ThreadStore(path)
    b = ThreadStore(path)
    try:
        t = a.create("workflow", "debug")
        assert b.get(t.id).id == t.id
    finally:
        a.close()
        b.close()


def test_two_threads_never_see_each_others_steps(store: ThreadStore) -> None:
    one = store.create("workflow", "debug")
    two = store.create("workflow", "debug")
    assert one.id != two.id
    store.record_step(one.id, 1, "workflow", {"owner": "one"})
    store.record_step(two.id, 1, "workflow", {"owner": "two"})
    store.record_step(two.id, 2, "workflow", {"owner": "two"})
    store.record_step(one.id, 1, "workflow", {"owner": "one", "retry": True})
    assert [s.payload["owner"] for s in store.get(one.id).steps] == ["one"]
    assert [s.payload["owner"] for s in store.get(two.id).steps] == ["two", "two"]


def test_concurrent_appends_from_two_os_threads_and_two_stores_lose_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "threads.sqlite3"
    stores = [ThreadStore(path, max_turns=500), ThreadStore(path, max_turns=500)]
    shared = stores[0].create("workflow", "debug")
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(store: ThreadStore, name: str) -> None:
        try:
            own = store.create("workflow", "debug")
            start.wait(timeout=10)
            for i in range(50):
                store.append_step(shared.id, "workflow", {"writer": name, "i": i})
                store.record_step(own.id, i + 1, "workflow", {"writer": name, "i": i})
            got = store.get(own.id)
            assert numbers(got) == list(range(1, 51))
            assert all(s.payload["writer"] == name for s in got.steps)
        except BaseException as exc:
            errors.append(exc)

    workers = [
        threading.Thread(target=writer, args=(stores[0], "a")),
        threading.Thread(target=writer, args=(stores[1], "b")),
    ]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
        assert not any(w.is_alive() for w in workers)
        assert errors == []
        got = stores[0].get(shared.id)
        assert numbers(got) == list(range(1, 101))
        for name in ("a", "b"):
            mine = [s.payload["i"] for s in got.steps if s.payload["writer"] == name]
            assert mine == list(range(50))
    finally:
        for s in stores:
            s.close()


def test_one_store_shared_by_two_os_threads_loses_nothing(tmp_path: Path) -> None:
    with ThreadStore(tmp_path / "threads.sqlite3", max_turns=500) as s:
        t = s.create("workflow", "debug")

        def writer(name: str) -> None:
            for i in range(50):
                s.append_step(t.id, "workflow", {"writer": name, "i": i})

        workers = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
        assert numbers(s.get(t.id)) == list(range(1, 101))


# -- edit: one transaction per change ------------------------------------------------------


def count_rows(store: ThreadStore, table: str) -> int:
    """Threads or steps the store holds, whichever the backend."""
    if isinstance(store, RedisThreadStore):
        raws = [store._client.get(k) for k in store._client.scan_iter(f"{store.prefix}thread:*")]
        threads = [json.loads(raw) for raw in raws if raw is not None]
        return len(threads) if table == "threads" else sum(len(t["steps"]) for t in threads)
    return store._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_edit_returns_what_change_returns_after_seeing_the_current_thread(
    store: ThreadStore,
) -> None:
    t = store.create("workflow", "debug")
    store.record_step(t.id, 1, "workflow", {"n": 1})
    seen: list[Thread] = []

    def look(editor: ThreadEditor) -> str:
        seen.append(editor.thread)
        return "decided"

    assert store.edit(t.id, look) == "decided"
    assert seen == [store.get(t.id)]


def test_several_writes_in_one_edit_keep_the_snapshot_equal_to_a_fresh_read(
    make_store: MakeStore,
) -> None:
    clock = FakeClock()
    with make_store(clock=clock) as s:
        t = s.create("workflow", "debug")
        s.record_step(t.id, 1, "workflow", {"n": 1})
        s.record_step(t.id, 2, "workflow", {"n": 2})
        clock.advance_hours(1)

        def change(editor: ThreadEditor) -> Thread:
            assert numbers(editor.record(2, "workflow", {"n": "2 again"})) == [1, 2]
            assert numbers(editor.append("analyze", {"q": "why?"})) == [1, 2, 3]
            after = editor.update(1, {"n": 1, "verdict": "ok"})
            assert after is editor.thread
            return after

        got = s.edit(t.id, change)
        fresh = s.get(t.id)
        assert got == fresh
        assert got.expires_at == fresh.expires_at == clock.now + s.ttl_seconds
        assert got.updated_at == clock.now
        assert [x.payload for x in got.steps] == [
            {"n": 1, "verdict": "ok"},
            {"n": "2 again"},
            {"q": "why?"},
        ]


def test_a_change_that_raises_after_writing_leaves_nothing_written(store: ThreadStore) -> None:
    t = store.create("workflow", "debug")
    store.record_step(t.id, 1, "workflow", {"n": 1})
    before = store.get(t.id)

    def change(editor: ThreadEditor) -> None:
        editor.record(1, "workflow", {"n": "replaced"})
        editor.append("workflow", {"n": 2})
        raise ValueError("the decision failed")

    with pytest.raises(ValueError, match="decision failed"):
        store.edit(t.id, change)
    assert store.get(t.id) == before
    assert store.get(t.id).updated_at == before.updated_at


@pytest.mark.parametrize(
    "second_write",
    [
        pytest.param(lambda e: e.update(7, {}), id="no such step"),
        pytest.param(lambda e: e.append("workflow", {}), id="thread full"),
        pytest.param(lambda e: e.record(0, "workflow", {}), id="bad step number"),
        pytest.param(lambda e: e.append("workflow", {"x": object()}), id="bad payload"),
    ],
)
def test_an_error_from_a_later_write_rolls_back_the_earlier_ones(
    second_write: Callable[[ThreadEditor], object], make_store: MakeStore
) -> None:
    with make_store(max_turns=2) as s:
        t = s.create("workflow", "debug")
        s.record_step(t.id, 1, "workflow", {"n": 1})

        def change(editor: ThreadEditor) -> None:
            editor.append("workflow", {"n": 2})
            second_write(editor)

        with pytest.raises(InputError):  # ThreadError is one too
            s.edit(t.id, change)
        assert numbers(s.get(t.id)) == [1]


def test_a_refused_write_writes_nothing_and_the_edit_can_go_on(make_store: MakeStore) -> None:
    with make_store(max_turns=1) as s:
        t = s.create("workflow", "debug")
        s.record_step(t.id, 1, "workflow", {"n": 1})

        def change(editor: ThreadEditor) -> Thread:
            with pytest.raises(ThreadError, match="EXAI_MAX_THREAD_TURNS=1"):
                editor.append("workflow", {"n": 2})
            return editor.record(1, "workflow", {"n": "1 again"})

        assert [x.payload for x in s.edit(t.id, change).steps] == [{"n": "1 again"}]
        assert [x.payload for x in s.get(t.id).steps] == [{"n": "1 again"}]


def test_a_write_failing_half_way_rolls_back_even_if_change_swallows_the_error(
    store: ThreadStore,
) -> None:
    if isinstance(store, RedisThreadStore):
        pytest.skip("a SQL trigger makes the write fail; Redis writes the thread once, at commit")
    t = store.create("workflow", "debug")
    store.record_step(t.id, 1, "workflow", {"n": 1})
    store.record_step(t.id, 2, "workflow", {"n": 2})
    store._conn.execute(
        "CREATE TEMP TRIGGER refuse_boom BEFORE INSERT ON steps WHEN NEW.tool = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
    )

    def change(editor: ThreadEditor) -> str:
        # record() deletes steps >= 1, then its insert fails: the delete must not stick.
        with pytest.raises(sqlite3.IntegrityError, match="boom refused"):
            editor.record(1, "boom", {})
        with pytest.raises(RuntimeError, match="earlier write"):
            editor.append("workflow", {})
        return "carried on"

    with pytest.raises(sqlite3.IntegrityError, match="boom refused"):
        store.edit(t.id, change)
    assert numbers(store.get(t.id)) == [1, 2]


def test_create_and_edit_keeps_the_thread_and_its_first_step(store: ThreadStore) -> None:
    got = store.create_and_edit("workflow", "debug", lambda e: e.record(1, "workflow", {"n": 1}))
    assert got.kind == "debug"
    assert store.get(got.id) == got
    assert numbers(got) == [1]


def test_create_and_edit_whose_change_raises_leaves_no_thread(store: ThreadStore) -> None:
    def change(editor: ThreadEditor) -> None:
        editor.record(1, "workflow", {"n": 1})
        raise InputError("step 1 was wrong after all")

    with pytest.raises(InputError, match="wrong after all"):
        store.create_and_edit("workflow", "debug", change)
    assert count_rows(store, "threads") == 0
    assert count_rows(store, "steps") == 0


def test_create_all_keeps_each_thread_that_succeeds_and_none_of_one_that_fails(
    store: ThreadStore,
) -> None:
    def first_step(editor: ThreadEditor) -> object:
        return editor.record(1, "analyze", {"n": editor.thread.id})

    def wrong(editor: ThreadEditor) -> None:
        editor.record(1, "analyze", {"n": "b"})
        raise InputError("step 1 was wrong after all")

    ids = [new_thread_id() for _ in range(3)]
    outcomes = store.create_all(
        [
            NewThread(ids[0], "analyze", None, first_step),
            NewThread(ids[1], "analyze", None, wrong),
            NewThread(ids[2], "workflow", "debug", first_step),
        ]
    )
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "InputError", "NoneType"]
    assert store.get(ids[0]).steps[0].payload == {"n": ids[0]}
    assert store.get(ids[2]).kind == "debug"
    with pytest.raises(ThreadError, match="unknown"):
        store.get(ids[1])
    assert count_rows(store, "threads") == 2
    assert count_rows(store, "steps") == 2


def test_editing_an_expired_thread_deletes_it_for_good_without_calling_change(
    make_store: MakeStore,
) -> None:
    clock = FakeClock()
    with make_store(ttl_hours=1, clock=clock) as s:
        t = s.create("workflow", "debug")
        s.record_step(t.id, 1, "workflow", {})
        clock.advance_hours(2)
        called: list[ThreadEditor] = []
        with pytest.raises(ThreadError, match="expired"):
            s.edit(t.id, called.append)
        assert called == []
        assert count_rows(s, "threads") == 0
        assert count_rows(s, "steps") == 0
        with pytest.raises(ThreadError, match="is unknown"):
            s.edit(t.id, called.append)


def test_an_editor_cannot_write_once_its_edit_is_over(store: ThreadStore) -> None:
    t = store.create("workflow", "debug")
    kept: ThreadEditor = store.edit(t.id, lambda e: e)
    with pytest.raises(RuntimeError, match="only write while its edit is running"):
        kept.append("workflow", {})
    assert store.get(t.id).steps == ()


def test_calling_the_store_from_inside_change_fails_instead_of_hanging(
    store: ThreadStore,
) -> None:
    t = store.create("workflow", "debug")

    def change(editor: ThreadEditor) -> None:
        editor.append("workflow", {})
        store.get(t.id)

    with pytest.raises(RuntimeError, match="inside an edit"):
        store.edit(t.id, change)
    assert store.get(t.id).steps == ()


def test_a_closed_store_refuses_work_and_closes_twice_quietly() -> None:
    s = ThreadStore(":memory:")
    s.close()
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.create("workflow", None)


def test_the_default_path_is_in_the_user_data_directory() -> None:
    path = default_db_path()
    assert path.name == "threads.sqlite3"
    assert "exai-mcp" in path.parts


# -- maintenance: purge on a timer, and a file that shrinks ----------------------------------


async def test_maintenance_on_a_timer_purges_expired_threads_without_any_create() -> None:
    clock = FakeClock()
    ticks, timer = anyio.create_memory_object_stream[None](0)
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)
        await timer.receive()  # the test says when the interval is over

    def gone(thread_id: str) -> bool:
        with pytest.raises(ThreadError) as info:
            s.get(thread_id)
        return "is unknown" in str(info.value)

    with ThreadStore(":memory:", ttl_hours=1, clock=clock) as s:
        first = s.create("workflow", "debug")
        clock.advance_hours(2)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(run_maintenance, s, 300, sleep=sleep))
                # A tick is taken once the run before it is over: the start-up run purged.
                await ticks.send(None)
                assert gone(first.id)

                second = s.create("analyze", None)  # a create purges nothing by itself
                clock.advance_hours(2)
                with pytest.raises(ThreadError, match="expired"):
                    s.get(second.id)
                await ticks.send(None)  # the timer fires: one more run ...
                await ticks.send(None)  # ... which is over once the next tick is taken
                assert gone(second.id)
                tg.cancel_scope.cancel()
    assert asked == [300, 300, 300]


async def test_maintenance_stops_quietly_when_the_store_is_closed() -> None:
    s = ThreadStore(":memory:")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_maintenance, s, 0.01)
            await anyio.sleep(0.05)
            s.close()
    # the task group ended on its own: the loop saw the store closed


def test_maintain_gives_the_pages_of_expired_threads_back_to_the_file_system(
    tmp_path: Path,
) -> None:
    path = tmp_path / "threads.sqlite3"
    clock = FakeClock()
    with ThreadStore(path, ttl_hours=1, clock=clock) as s:
        keep = s.create("workflow", "debug")
        for _ in range(200):
            t = s.create("workflow", "debug")
            s.record_step(t.id, 1, "workflow", {"findings": "x" * 8000})
        s.maintain()  # a checkpoint, so the file on disk holds every page
        full_pages, full_bytes = page_count(s), path.stat().st_size
        clock.advance_hours(0.5)
        s.record_step(keep.id, 1, "workflow", {"findings": "still here"})
        clock.advance_hours(0.7)  # the 200 are expired now, `keep` is not

        done = s.maintain()

        assert done.purged == 200
        assert done.pages_freed > 0.9 * full_pages - 50
        assert done.pages == page_count(s) < full_pages / 10
        assert path.stat().st_size < full_bytes / 10
        assert s.get(keep.id).steps[0].payload == {"findings": "still here"}


def test_an_existing_file_without_incremental_vacuum_is_converted_and_keeps_its_threads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "threads.sqlite3"
    with ThreadStore(path) as s:
        t = s.create("workflow", "debug")
        s.record_step(t.id, 1, "workflow", {"findings": "a"})
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")  # as exai-mcp made files before it shrank them
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()

    with ThreadStore(path) as s:
        assert s.get(t.id).steps[0].payload == {"findings": "a"}
        assert s._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        assert s.journal_mode == "wal"


def page_count(store: ThreadStore) -> int:
    return store._conn.execute("PRAGMA page_count").fetchone()[0]


def test_two_redis_stores_appending_from_two_os_threads_lose_nothing(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Two servers on one Redis, each writing the same thread: the optimistic edits retry."""
    stores = [RedisThreadStore(redis_server.url, prefix=redis_prefix, max_turns=500) for _ in "ab"]
    shared = stores[0].create("workflow", "debug")
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(store: ThreadStore, name: str) -> None:
        try:
            start.wait(timeout=10)
            for i in range(50):
                store.append_step(shared.id, "workflow", {"writer": name, "i": i})
        except BaseException as exc:
            errors.append(exc)

    workers = [
        threading.Thread(target=writer, args=(s, n)) for s, n in zip(stores, "ab", strict=True)
    ]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
        assert errors == []
        got = stores[1].get(shared.id)
        assert numbers(got) == list(range(1, 101))
        for name in "ab":
            assert [s.payload["i"] for s in got.steps if s.payload["writer"] == name] == list(
                range(50)
            )
    finally:
        for s in stores:
            s.close()


def test_threads_go_to_the_local_store_while_redis_is_down_and_are_found_after(
    own_redis: RedisServer, redis_prefix: str
) -> None:
    with RedisThreadStore(
        own_redis.url, prefix=redis_prefix, timeout=0.3, fallback=ThreadStore(":memory:")
    ) as s:
        before = s.create("workflow", "debug")
        own_redis.stop()
        during = s.create("workflow", "debug")  # degraded: kept in this process
        s.record_step(during.id, 1, "workflow", {"n": 1})
        own_redis.start()
        s.record_step(during.id, 2, "workflow", {"n": 2})  # found in the fallback
        assert numbers(s.get(during.id)) == [1, 2]
        with pytest.raises(ThreadError, match="is unknown"):
            s.get(before.id)  # Redis restarted without persistence: its threads are gone
