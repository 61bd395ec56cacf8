"""Steps sent at once are all kept, and busy processes do not starve each other.

The workload mirrors `workflow` steps 2 and 3 arriving together: each writer reads the thread,
decides the next step number from what it read, and records it. Done as two transactions
(`get`, then `record_step`) a writer can record over the step another writer just added;
done in one `ThreadStore.edit`, nothing is lost, between threads or between processes.

Reads take no write lock, so a read never waits for a writer, even one of another process
holding the lock; a writer that cannot get the lock in time gets `BusyError`, never a raw
`sqlite3.OperationalError`, however hard two processes hammer one file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from exai_mcp.errors import BusyError
from exai_mcp.shared.threads import RedisThreadStore
from exai_mcp.store import threads
from exai_mcp.store.threads import Thread, ThreadEditor, ThreadStore

THREADS = 10  # conversation threads written at once
ROUNDS = 5  # steps each writer adds to each of them
JOIN_TIMEOUT = 10  # seconds; only reached if something hangs


def record_next(store: ThreadStore, thread_id: str, payload: dict) -> Thread:
    """Record the step after the last one, deciding inside the write transaction."""

    def next_step(editor: ThreadEditor) -> Thread:
        return editor.record(editor.thread.last_step_number + 1, "workflow", payload)

    return store.edit(thread_id, next_step)


def record_next_the_old_way(
    store: ThreadStore, thread_id: str, payload: dict, pause: Callable[[], None] = lambda: None
) -> Thread:
    """The defect: read in one transaction, write in a second; `pause` widens the gap."""
    thread = store.get(thread_id)
    pause()
    return store.record_step(thread_id, thread.last_step_number + 1, "workflow", payload)


def run_together(*jobs: Callable[[], object]) -> list[object]:
    """Run each job in its own OS thread, started together; re-raise the first failure."""
    start = threading.Barrier(len(jobs))
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait(timeout=JOIN_TIMEOUT)
            results[i] = jobs[i]()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=JOIN_TIMEOUT)
    assert not any(w.is_alive() for w in workers), "a writer hung"
    if errors:
        raise errors[0]
    return results


def wait_for_the_other(rendezvous: threading.Barrier) -> Callable[[], None]:
    """A pause until the other writer has read too, or 0.2 s if it cannot get to read."""

    def pause() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            rendezvous.wait(timeout=0.2)

    return pause


@pytest.fixture(
    params=[1, 2, "redis"], ids=["one store", "two stores on one file", "two stores on one Redis"]
)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ThreadStore]]:
    if request.param == "redis":  # two servers' stores: optimistic edits instead of a lock
        url = request.getfixturevalue("redis_server").url
        prefix = request.getfixturevalue("redis_prefix")
        opened = [RedisThreadStore(url, prefix=prefix, max_turns=1000) for _ in range(2)]
    else:
        opened = [
            ThreadStore(tmp_path / "threads.sqlite3", max_turns=1000) for _ in range(request.param)
        ]
    try:
        yield opened
    finally:
        for s in opened:
            s.close()


def assert_every_step_kept(store: ThreadStore, thread_ids: list[str], writers: list[str]) -> None:
    for thread_id in thread_ids:
        steps = store.get(thread_id).steps
        assert [s.number for s in steps] == list(range(1, len(writers) * ROUNDS + 1))
        for name in writers:
            assert [s.payload["round"] for s in steps if s.payload["writer"] == name] == list(
                range(ROUNDS)
            )


# -- the gap, forced open: the old way loses a step every time, edit never ----------------


def test_reading_then_recording_in_two_transactions_loses_a_step(
    stores: list[ThreadStore],
) -> None:
    thread = stores[0].create("workflow", "debug")
    stores[0].record_step(thread.id, 1, "workflow", {"writer": "client"})
    pause = wait_for_the_other(threading.Barrier(2))

    run_together(
        lambda: record_next_the_old_way(stores[0], thread.id, {"writer": "a"}, pause),
        lambda: record_next_the_old_way(stores[-1], thread.id, {"writer": "b"}, pause),
    )

    # Both read step 1 as the last, both recorded step 2: one of the two steps is gone.
    steps = stores[0].get(thread.id).steps
    assert [s.number for s in steps] == [1, 2]
    assert steps[1].payload["writer"] in {"a", "b"}


def test_a_decision_taken_inside_edit_cannot_be_overtaken(stores: list[ThreadStore]) -> None:
    thread = stores[0].create("workflow", "debug")
    stores[0].record_step(thread.id, 1, "workflow", {"writer": "client"})
    pause = wait_for_the_other(threading.Barrier(2))

    def writer(store: ThreadStore, name: str) -> Thread:
        def next_step(editor: ThreadEditor) -> Thread:
            last = editor.thread.last_step_number
            pause()  # the other writer cannot read meanwhile: it waits for our write lock
            return editor.record(last + 1, "workflow", {"writer": name})

        return store.edit(thread.id, next_step)

    run_together(lambda: writer(stores[0], "a"), lambda: writer(stores[-1], "b"))

    steps = stores[0].get(thread.id).steps
    assert [s.number for s in steps] == [1, 2, 3]
    assert {s.payload["writer"] for s in steps[1:]} == {"a", "b"}


# -- free-running writers ------------------------------------------------------------------


def test_eight_os_threads_recording_the_next_step_lose_none(stores: list[ThreadStore]) -> None:
    thread_ids = [stores[0].create("workflow", "debug").id for _ in range(THREADS)]
    writers = [f"w{i}" for i in range(8)]

    def writer(store: ThreadStore, name: str) -> None:
        for round_ in range(ROUNDS):
            for thread_id in thread_ids:
                record_next(store, thread_id, {"writer": name, "round": round_})

    run_together(*(partial(writer, stores[i % len(stores)], w) for i, w in enumerate(writers)))

    assert_every_step_kept(stores[0], thread_ids, writers)


_CHILD = """
import json, sys, time
from exai_mcp.store.threads import ThreadStore

path, name, thread_ids, rounds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])

def next_step(editor, round_):
    number = editor.thread.last_step_number + 1
    time.sleep(0.001)  # the decision takes a while, as workflow's does
    return editor.record(number, "workflow", {"writer": name, "round": round_})

with ThreadStore(path, max_turns=1000) as store:
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for round_ in range(rounds):
        for thread_id in thread_ids:
            store.edit(thread_id, lambda editor: next_step(editor, round_))
            time.sleep(0.001)  # let the other process in: SQLite's busy wait is not fair
"""


def test_two_processes_recording_the_next_step_lose_none(tmp_path: Path) -> None:
    path = tmp_path / "threads.sqlite3"
    with ThreadStore(path) as store:
        thread_ids = [store.create("workflow", "debug").id for _ in range(THREADS)]
    writers = ["p0", "p1"]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), name, json.dumps(thread_ids), str(ROUNDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in writers
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            _, err = child.communicate(timeout=JOIN_TIMEOUT)
            assert child.returncode == 0, err
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    with ThreadStore(path) as store:
        assert_every_step_kept(store, thread_ids, writers)


# -- compare-and-set: a verdict goes on the step it was computed for -------------------------


def attach_verdict(store: ThreadStore, thread_id: str, asked: dict, pause: Callable[[], None]):
    """Attach the verdict to step 1 only if step 1 is still the step it answers."""

    def attach(editor: ThreadEditor) -> bool:
        current = editor.thread.step(1)
        pause()
        if current is None or current.payload != asked:
            return False
        editor.update(1, {**asked, "verdict": "ok"})
        return True

    return store.edit(thread_id, attach)


@pytest.mark.parametrize("window", ["forced open", "free running"])
def test_a_verdict_is_never_attached_to_a_step_replaced_meanwhile(
    stores: list[ThreadStore], window: str
) -> None:
    asked, resent = {"findings": "a"}, {"findings": "b"}
    for _ in range(1 if window == "forced open" else 20):
        thread = stores[0].create("workflow", "debug")
        stores[0].record_step(thread.id, 1, "workflow", asked)
        pause = (
            wait_for_the_other(threading.Barrier(2)) if window == "forced open" else lambda: None
        )

        def replace_step(store: ThreadStore, thread_id: str = thread.id, pause=pause) -> None:
            pause()
            store.record_step(thread_id, 1, "workflow", resent)

        attached, _ = run_together(
            lambda thread_id=thread.id, pause=pause: attach_verdict(
                stores[0], thread_id, asked, pause
            ),
            lambda: replace_step(stores[-1]),
        )

        # Either the verdict went on step "a" before "b" replaced it, or "b" came first and
        # the verdict was dropped; either way the thread ends holding "b" and no verdict.
        # With the window forced open the attach holds the write lock while "b" waits for it.
        # In Redis the attach does not hold a lock: it may lose to "b" and decide again.
        locked = not isinstance(stores[0], RedisThreadStore)
        assert attached is True if window == "forced open" and locked else attached in {True, False}
        assert [s.payload for s in stores[0].get(thread.id).steps] == [resent]


def test_the_old_verdict_attach_overwrites_a_step_replaced_meanwhile(
    stores: list[ThreadStore],
) -> None:
    asked, resent = {"findings": "a"}, {"findings": "b"}
    thread = stores[0].create("workflow", "debug")
    stores[0].record_step(thread.id, 1, "workflow", asked)
    read, replaced = threading.Event(), threading.Event()

    def attach_the_old_way() -> None:
        current = stores[0].get(thread.id).step(1)
        read.set()
        assert replaced.wait(timeout=JOIN_TIMEOUT)
        if current is not None and current.payload == asked:
            stores[0].update_step_payload(thread.id, 1, {**asked, "verdict": "ok"})

    def replace_step() -> None:
        assert read.wait(timeout=JOIN_TIMEOUT)
        stores[-1].record_step(thread.id, 1, "workflow", resent)
        replaced.set()

    run_together(attach_the_old_way, replace_step)

    # The resent step "b" is gone and the verdict sits on the stale "a".
    assert [s.payload for s in stores[0].get(thread.id).steps] == [
        {"findings": "a", "verdict": "ok"}
    ]


# -- reads never wait for writers; a lock held too long is BusyError -------------------------


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another connection (a sqlite3 shell, another server) holding the write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_read_succeeds_while_another_connection_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "threads.sqlite3"
    with ThreadStore(path) as store:
        thread = store.create("workflow", "debug")
        store.record_step(thread.id, 1, "workflow", {"findings": "a"})

        with write_lock_held(path):
            started = time.monotonic()
            got = store.get(thread.id)
            waited = time.monotonic() - started

    assert [s.payload for s in got.steps] == [{"findings": "a"}]
    assert waited < 1.0  # no busy wait at all: a read takes no write lock


def test_a_read_is_not_held_up_by_an_edit_of_its_own_process_waiting_for_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads, "BUSY_TIMEOUT_MS", 1500)
    path = tmp_path / "threads.sqlite3"
    with ThreadStore(path) as store:
        thread = store.create("workflow", "debug")
        waiting = threading.Event()
        outcome: list[BaseException] = []

        def stuck_writer() -> None:
            waiting.set()
            try:
                store.append_step(thread.id, "workflow", {})
            except BaseException as exc:
                outcome.append(exc)

        with write_lock_held(path):
            writer = threading.Thread(target=stuck_writer)
            writer.start()
            assert waiting.wait(timeout=JOIN_TIMEOUT)
            time.sleep(0.1)  # the writer is in its busy wait now
            started = time.monotonic()
            assert store.get(thread.id).steps == ()
            waited = time.monotonic() - started
            writer.join(timeout=JOIN_TIMEOUT)

    assert waited < 1.0
    assert len(outcome) == 1 and isinstance(outcome[0], BusyError)


def test_a_write_that_cannot_get_the_lock_in_time_is_a_busy_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads, "BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "threads.sqlite3"
    with ThreadStore(path) as store:
        thread = store.create("workflow", "debug")

        with write_lock_held(path), pytest.raises(BusyError) as info:
            store.record_step(thread.id, 1, "workflow", {"findings": "a"})

        assert f"EXAI_STATE_DB={path} is busy with another process" in str(info.value)
        assert "retry the call" in str(info.value)
        # Nothing was half-written, and the same call works once the lock is free.
        assert store.get(thread.id).steps == ()
        assert [s.number for s in store.record_step(thread.id, 1, "workflow", {}).steps] == [1]


# -- two busy processes: every call succeeds or says busy ----------------------------------

HAMMER_SECONDS = 3.0
_HAMMER = """
import json, random, sys, threading, time, traceback
from exai_mcp.errors import BusyError, ThreadError
from exai_mcp.store.threads import ThreadStore

path, thread_ids = sys.argv[1], json.loads(sys.argv[2])
seconds, seed = float(sys.argv[3]), int(sys.argv[4])
MAX_OPS = 200_000  # per worker thread; the time limit ends the run long before
counts = {"read": 0, "write": 0, "busy": 0, "full": 0, "maintain": 0}
latency = {"read": 0.0, "write": 0.0}
errors = []
lock = threading.Lock()
payload = {"findings": "f" * 2000, "relevant_files": ["/x/a.py", "/x/b.py"]}

def note(kind, took):
    with lock:
        counts[kind] += 1
        if kind in latency:
            latency[kind] = max(latency[kind], took)

def reader(store, rng, deadline):
    for _ in range(MAX_OPS):
        if time.monotonic() > deadline:
            return
        started = time.monotonic()
        try:
            store.get(rng.choice(thread_ids))
            note("read", time.monotonic() - started)
        except BusyError:
            note("busy", 0)

def record_next(editor):
    editor.record(editor.thread.last_step_number + 1, "workflow", payload)

def update_last(editor):
    if editor.thread.steps:
        editor.update(editor.thread.last_step_number, payload)

def first_step(editor):
    return editor.record(1, "workflow", payload).id

def writer(store, rng, deadline):
    for i in range(MAX_OPS):
        if time.monotonic() > deadline:
            return
        index = rng.randrange(len(thread_ids))
        started = time.monotonic()
        try:
            action = rng.random()
            if action < 0.4:
                store.edit(thread_ids[index], record_next)
            elif action < 0.7:
                store.append_step(thread_ids[index], "analyze", payload)
            elif action < 0.9:
                store.edit(thread_ids[index], update_last)
            elif action < 0.99:
                thread_ids[index] = store.create_and_edit("workflow", "debug", first_step)
            else:
                store.maintain()
                note("maintain", 0)
                continue
            note("write", time.monotonic() - started)
        except BusyError:
            note("busy", 0)
        except ThreadError:  # full: start a new thread, as a client would
            note("full", 0)
            thread_ids[index] = store.create("workflow", "debug").id

def run(target, store, rng, deadline):
    try:
        target(store, rng, deadline)
    except BaseException:
        errors.append(traceback.format_exc())

with ThreadStore(path) as store:
    print("ready", flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + seconds
    workers = [
        threading.Thread(target=run, args=(target, store, random.Random(seed * 10 + n), deadline))
        for n, target in enumerate((reader, reader, writer, writer))
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=seconds + 30)
print(json.dumps({"counts": counts, "latency": latency, "errors": errors}), flush=True)
"""


def test_two_busy_processes_reading_and_writing_never_see_a_raw_sqlite_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "threads.sqlite3"
    with ThreadStore(path) as store:
        thread_ids = [store.create("workflow", "debug").id for _ in range(THREADS)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _HAMMER,
                str(path),
                json.dumps(thread_ids),
                str(HAMMER_SECONDS),
                str(seed),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    reports = []
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            out, err = child.communicate(timeout=HAMMER_SECONDS + JOIN_TIMEOUT * 3)
            assert child.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    for report in reports:
        assert report["errors"] == [], report["errors"][0]  # no OperationalError, nothing raw
        assert report["counts"]["read"] > 50 and report["counts"]["write"] > 50, report
