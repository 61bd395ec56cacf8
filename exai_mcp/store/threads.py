"""Conversation threads for multi-step tools, kept in SQLite so they survive restarts.

A thread is what a `continuation_id` names: the `workflow` and `analyze` tools record each
step of an investigation in it, so that step N+1 (possibly served by another server process
on the same machine, or after a restart) sees steps 1..N.

Every change to a thread is one `BEGIN IMMEDIATE` transaction, and a caller whose write
depends on what it read decides inside it:

    def next_step(editor: ThreadEditor) -> Thread:
        return editor.record(editor.thread.last_step_number + 1, "workflow", payload)

    thread = store.edit(continuation_id, next_step)

`change` sees the thread as it is when the write lock is taken, so no other writer (thread
or process) can slip in between its read and its write; if it raises, nothing it wrote
stays. `record_step`, `append_step` and `update_step_payload` are one-write edits.

Concurrency model: one `sqlite3` connection per `ThreadStore`, opened with
`check_same_thread=False` and guarded by a lock, because callers run the synchronous API in
anyio worker threads; an edit holds the lock from `BEGIN IMMEDIATE` to `COMMIT`. Between
processes sharing one file, WAL mode, a `busy_timeout` and `BEGIN IMMEDIATE` keep writes
serialised: two processes editing the same thread can never interleave. `change` must not
call the store itself (RuntimeError rather than a deadlock) and should be quick: other
writers wait for it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import platformdirs

from exai_mcp.errors import ConfigError, InputError, ThreadError

__all__ = [
    "SCHEMA_VERSION",
    "Step",
    "Thread",
    "ThreadEditor",
    "ThreadStore",
    "default_db_path",
]

T = TypeVar("T")

SCHEMA_VERSION = 1
_MOVE_ASIDE = 1 << 40  # far above any step number: where steps wait while they are renumbered
BUSY_TIMEOUT_MS = 5000
MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    id          TEXT PRIMARY KEY,
    tool        TEXT NOT NULL,
    kind        TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS threads_expires_at ON threads (expires_at);
CREATE TABLE IF NOT EXISTS steps (
    thread_id   TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    number      INTEGER NOT NULL CHECK (number >= 1),
    tool        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (thread_id, number)
);
"""


def default_db_path() -> Path:
    """Where threads live unless EXAI_STATE_DB says otherwise: the per-user data directory."""
    return platformdirs.user_data_path("exai-mcp") / "threads.sqlite3"


@dataclass(frozen=True)
class Step:
    """One recorded step of a thread; `payload` is whatever the tool chose to keep (JSON)."""

    number: int
    tool: str
    payload: dict[str, Any]
    recorded_at: float


@dataclass(frozen=True)
class Thread:
    """A snapshot of a thread and its steps in ascending step order."""

    id: str
    tool: str
    kind: str | None
    created_at: float
    updated_at: float
    steps: tuple[Step, ...] = ()
    expires_at: float = field(default=0.0, compare=False)

    @property
    def last_step_number(self) -> int:
        """Highest recorded step number, 0 for a thread without steps."""
        return self.steps[-1].number if self.steps else 0

    @property
    def last_step(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    def step(self, number: int) -> Step | None:
        """The step with this number, or None if it was never recorded (or was dropped)."""
        for s in self.steps:
            if s.number == number:
                return s
        return None


class ThreadStore:
    """SQLite-backed thread storage with a TTL from last activity and a cap on steps.

    The API is synchronous on purpose: sqlite3 is blocking, so async callers wrap calls in
    `anyio.to_thread.run_sync`. Every public method takes the instance lock, so one store
    may be shared by many worker threads. `edit` and `create_and_edit` are the one write
    path: the other writing methods are shorthands for them.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        ttl_hours: float = 24,
        max_turns: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_hours <= 0:
            raise ConfigError(f"EXAI_THREAD_TTL_HOURS must be > 0, got {ttl_hours}")
        if max_turns < 1:
            raise ConfigError(f"EXAI_MAX_THREAD_TURNS must be >= 1, got {max_turns}")
        self.path = str(path)
        self.ttl_hours = ttl_hours
        self.max_turns = max_turns
        self._clock = clock
        # Re-entrant so that a store call made from inside `change` fails instead of hanging.
        self._lock = threading.RLock()
        self._is_memory = self.path == MEMORY
        if not self._is_memory:
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.path = str(Path(self.path).expanduser())
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE for writes).
            self._conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot open the thread store EXAI_STATE_DB={self.path}: {exc}"
            ) from exc
        self._closed = False
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise

    # -- set-up -------------------------------------------------------------------------

    def _setup(self) -> None:
        """Pragmas and schema; idempotent, safe when several processes start at once."""
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        if not self._is_memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigError(
                    f"the thread store EXAI_STATE_DB={self.path} cannot use WAL mode "
                    f"(got {mode!r}); put it on a local file system"
                )
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the thread store EXAI_STATE_DB={self.path} has schema version {version}, "
                    f"newer than this exai-mcp understands ({SCHEMA_VERSION}); upgrade exai-mcp "
                    "or point EXAI_STATE_DB at another file"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @property
    def journal_mode(self) -> str:
        """The journal mode SQLite reports ("wal" for files, "memory" for `:memory:`)."""
        with self._lock:
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    @property
    def ttl_seconds(self) -> float:
        return self.ttl_hours * 3600.0

    # -- public API ---------------------------------------------------------------------

    def edit(self, thread_id: str, change: Callable[[ThreadEditor], T]) -> T:
        """Load the thread and apply `change` to it in one write transaction.

        `change` gets a `ThreadEditor` whose `thread` is the current snapshot and returns
        what `edit` returns. If it raises, everything it wrote is rolled back and the
        exception propagates. ThreadError if the thread is unknown or expired, as `get`.
        """
        return self._transact(lambda now: self._load(thread_id, now), change)

    def create_and_edit(
        self, tool: str, kind: str | None, change: Callable[[ThreadEditor], T]
    ) -> T:
        """Create a thread and apply `change` to it in the same transaction.

        If `change` raises, no thread is left behind. Purges expired threads first, as `create`.
        """
        _require_text("tool", tool)
        return self._transact(lambda now: self._insert(tool, kind, now), change)

    def create(self, tool: str, kind: str | None) -> Thread:
        """Start a new empty thread; purges expired threads first so the file stays small."""
        return self.create_and_edit(tool, kind, _snapshot)

    def get(self, thread_id: str) -> Thread:
        """The thread with its steps; ThreadError if unknown or expired (never creates one)."""
        # A write transaction because an expired thread is deleted right here.
        return self.edit(thread_id, _snapshot)

    def record_step(self, thread_id: str, number: int, tool: str, payload: dict) -> Thread:
        """Store step `number`: replaces a resent step, drops later steps on backtracking.

        Clients retry and go back; both must leave exactly one copy of each step number,
        and nothing after the step being (re)recorded.
        """
        _require_step_number(number)
        _require_text("tool", tool)
        encoded = _encode(payload)
        return self.edit(thread_id, lambda editor: editor._record(number, tool, encoded))

    def append_step(self, thread_id: str, tool: str, payload: dict) -> Thread:
        """Store a step after the last one (e.g. `analyze` continuing a workflow thread)."""
        _require_text("tool", tool)
        encoded = _encode(payload)
        return self.edit(thread_id, lambda editor: editor._append(tool, encoded))

    def update_step_payload(self, thread_id: str, number: int, payload: dict) -> Thread:
        """Replace the payload of an existing step (e.g. to attach the expert verdict)."""
        _require_step_number(number)
        encoded = _encode(payload)
        return self.edit(thread_id, lambda editor: editor._update(number, encoded))

    def purge_expired(self) -> int:
        """Delete every thread whose TTL has run out; returns how many were deleted."""
        with self._lock, self._transaction():
            return self._purge(self._clock())

    def close(self) -> None:
        """Close the connection; further calls fail. Safe to call twice."""
        with self._lock:
            if not self._closed:
                self._refuse_nested()
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals (caller holds self._lock) --------------------------------------------

    def _transact(
        self, open_thread: Callable[[float], Thread], change: Callable[[ThreadEditor], T]
    ) -> T:
        """`open_thread` then `change` in one `BEGIN IMMEDIATE` transaction."""
        with self._lock:
            self._begin()
            try:
                now = self._clock()
                thread = open_thread(now)
            except ThreadError:
                # Raised before anything but the deletion of an expired thread, which must
                # stick: the next call should say "unknown", not "expired" again.
                self._conn.execute("COMMIT")
                raise
            except BaseException:
                self._rollback()
                raise
            editor = ThreadEditor(self, thread, now)
            try:
                result = change(editor)
                if editor._broken is not None:
                    # `change` swallowed a write that failed half-way: keep none of it.
                    raise editor._broken
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            finally:
                editor._closed = True
            return result

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """`BEGIN IMMEDIATE` ... `COMMIT`, `ROLLBACK` on any exception."""
        self._begin()
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _begin(self) -> None:
        if self._closed:
            raise RuntimeError("ThreadStore is closed")
        self._refuse_nested()
        # BEGIN IMMEDIATE takes the write lock up front, waiting up to busy_timeout, so a
        # read-then-write sequence cannot be overtaken by another connection.
        self._conn.execute("BEGIN IMMEDIATE")

    def _refuse_nested(self) -> None:
        if self._conn.in_transaction:
            raise RuntimeError(
                "ThreadStore was called from inside an edit; use the ThreadEditor instead"
            )

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _insert(self, tool: str, kind: str | None, now: float) -> Thread:
        self._purge(now)
        thread = Thread(
            id=str(uuid.uuid4()),
            tool=tool,
            kind=kind,
            created_at=now,
            updated_at=now,
            expires_at=now + self.ttl_seconds,
        )
        self._conn.execute(
            "INSERT INTO threads (id, tool, kind, created_at, updated_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (thread.id, tool, kind, now, now, thread.expires_at),
        )
        return thread

    def _purge(self, now: float) -> int:
        return self._conn.execute("DELETE FROM threads WHERE expires_at <= ?", (now,)).rowcount

    def _load_row(self, thread_id: str, now: float) -> tuple:
        """The thread's row; deletes it and raises if expired, raises if unknown."""
        row = self._conn.execute(
            "SELECT id, tool, kind, created_at, updated_at, expires_at FROM threads WHERE id = ?",
            (thread_id,),
        ).fetchone()
        if row is None:
            raise ThreadError(
                f"continuation_id '{thread_id}' is unknown: it was never created on this "
                f"server's store (EXAI_STATE_DB={self.path}) or was deleted (threads are "
                f"purged EXAI_THREAD_TTL_HOURS={self.ttl_hours:g} hours after their last "
                "step); start a new thread without continuation_id"
            )
        if row[5] <= now:
            self._conn.execute("DELETE FROM threads WHERE id = ?", (thread_id,))
            raise ThreadError(
                f"continuation_id '{thread_id}' expired after "
                f"EXAI_THREAD_TTL_HOURS={self.ttl_hours:g} hours without activity and was "
                "deleted; start a new thread without continuation_id and summarise the "
                "earlier findings in the first step"
            )
        return row

    def _load(self, thread_id: str, now: float) -> Thread:
        row = self._load_row(thread_id, now)
        steps = tuple(
            Step(number=n, tool=t, payload=json.loads(p), recorded_at=r)
            for n, t, p, r in self._conn.execute(
                "SELECT number, tool, payload, recorded_at FROM steps "
                "WHERE thread_id = ? ORDER BY number",
                (thread_id,),
            )
        )
        return Thread(
            id=row[0],
            tool=row[1],
            kind=row[2],
            created_at=row[3],
            updated_at=row[4],
            steps=steps,
            expires_at=row[5],
        )

    def _full_error(self, thread_id: str) -> ThreadError:
        return ThreadError(
            f"continuation_id '{thread_id}' is full: it would exceed "
            f"EXAI_MAX_THREAD_TURNS={self.max_turns} steps; start a new thread without "
            "continuation_id and summarise the findings so far in its first step"
        )


class ThreadEditor:
    """Writes to one thread inside the transaction `ThreadStore.edit` holds open.

    `thread` is the thread as this transaction sees it and is kept current after each
    write, so a decision taken from it cannot be overtaken. Each write returns the new
    snapshot. Refused checks (bad argument, thread full, no such step) write nothing and
    leave the editor usable; the editor works only while `change` runs.
    """

    __slots__ = ("_broken", "_closed", "_now", "_store", "thread")

    def __init__(self, store: ThreadStore, thread: Thread, now: float) -> None:
        self._store = store
        self._now = now
        self.thread = thread
        self._closed = False
        self._broken: BaseException | None = None

    def record(self, number: int, tool: str, payload: dict) -> Thread:
        """As `ThreadStore.record_step`: replace step `number` and drop the later steps."""
        _require_step_number(number)
        _require_text("tool", tool)
        return self._record(number, tool, _encode(payload))

    def append(self, tool: str, payload: dict) -> Thread:
        """As `ThreadStore.append_step`: a new step after the last one."""
        _require_text("tool", tool)
        return self._append(tool, _encode(payload))

    def insert(self, number: int, tool: str, payload: dict) -> Thread:
        """A new step `number`, moving that step and every later one up by one.

        For a step that arrives after a later one (two steps sent at once): it goes where it
        belongs, and nothing is dropped.
        """
        _require_step_number(number)
        _require_text("tool", tool)
        encoded = _encode(payload)
        self._check_open()
        if len(self.thread.steps) + 1 > self._store.max_turns:
            raise self._store._full_error(self.thread.id)
        step = Step(number=number, tool=tool, payload=json.loads(encoded), recorded_at=self._now)
        moved = tuple(
            replace(s, number=s.number + 1) if s.number >= number else s for s in self.thread.steps
        )
        with self._writing():
            # Out of the way and back, because the primary key must hold after every row.
            self._conn.execute(
                "UPDATE steps SET number = number + ? WHERE thread_id = ? AND number >= ?",
                (_MOVE_ASIDE + 1, self.thread.id, number),
            )
            self._conn.execute(
                "UPDATE steps SET number = number - ? WHERE thread_id = ? AND number > ?",
                (_MOVE_ASIDE, self.thread.id, _MOVE_ASIDE),
            )
            self._insert_step(step, encoded)
        return self._changed(tuple(sorted((*moved, step), key=lambda s: s.number)))

    def update(self, number: int, payload: dict) -> Thread:
        """As `ThreadStore.update_step_payload`: replace an existing step's payload."""
        _require_step_number(number)
        return self._update(number, _encode(payload))

    # Arguments below are validated and the payload encoded already.

    def _record(self, number: int, tool: str, encoded: str) -> Thread:
        self._check_open()
        kept = tuple(s for s in self.thread.steps if s.number < number)
        if len(kept) + 1 > self._store.max_turns:
            raise self._store._full_error(self.thread.id)
        step = Step(number=number, tool=tool, payload=json.loads(encoded), recorded_at=self._now)
        with self._writing():
            self._conn.execute(
                "DELETE FROM steps WHERE thread_id = ? AND number >= ?", (self.thread.id, number)
            )
            self._insert_step(step, encoded)
        return self._changed((*kept, step))

    def _append(self, tool: str, encoded: str) -> Thread:
        self._check_open()
        if len(self.thread.steps) + 1 > self._store.max_turns:
            raise self._store._full_error(self.thread.id)
        step = Step(
            number=self.thread.last_step_number + 1,
            tool=tool,
            payload=json.loads(encoded),
            recorded_at=self._now,
        )
        with self._writing():
            self._insert_step(step, encoded)
        return self._changed((*self.thread.steps, step))

    def _update(self, number: int, encoded: str) -> Thread:
        self._check_open()
        old = self.thread.step(number)
        if old is None:
            raise ThreadError(
                f"continuation_id '{self.thread.id}' has no step {number}; "
                "record the step before attaching results to it"
            )
        new = replace(old, payload=json.loads(encoded))
        with self._writing():
            self._conn.execute(
                "UPDATE steps SET payload = ? WHERE thread_id = ? AND number = ?",
                (encoded, self.thread.id, number),
            )
        return self._changed(tuple(new if s is old else s for s in self.thread.steps))

    @property
    def _conn(self) -> sqlite3.Connection:
        return self._store._conn

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("a ThreadEditor can only write while its edit is running")
        if self._broken is not None:
            raise RuntimeError("an earlier write of this edit failed; the edit will roll back")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Marks the editor broken if a write fails part-way, so the edit rolls back."""
        try:
            yield
        except BaseException as exc:
            self._broken = exc
            raise

    def _insert_step(self, step: Step, encoded: str) -> None:
        self._conn.execute(
            "INSERT INTO steps (thread_id, number, tool, payload, recorded_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (self.thread.id, step.number, step.tool, encoded, step.recorded_at),
        )

    def _changed(self, steps: tuple[Step, ...]) -> Thread:
        """Every write restarts the TTL; the snapshot follows without re-reading SQLite."""
        now, expires_at = self._now, self._now + self._store.ttl_seconds
        with self._writing():
            self._conn.execute(
                "UPDATE threads SET updated_at = ?, expires_at = ? WHERE id = ?",
                (now, expires_at, self.thread.id),
            )
        self.thread = replace(self.thread, steps=steps, updated_at=now, expires_at=expires_at)
        return self.thread


def _snapshot(editor: ThreadEditor) -> Thread:
    return editor.thread


def _require_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InputError(f"{name} must be a non-empty string, got {value!r}")


def _require_step_number(number: object) -> None:
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise InputError(f"step_number must be an integer >= 1, got {number!r}")


def _encode(payload: object) -> str:
    if not isinstance(payload, dict):
        raise InputError(f"step payload must be a JSON object (dict), got {type(payload).__name__}")
    try:
        return json.dumps(payload, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"step payload is not JSON-serialisable: {exc}") from exc
