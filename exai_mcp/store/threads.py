"""Conversation threads for multi-step tools, kept in SQLite so they survive restarts.

A thread is what a `continuation_id` names: the `workflow` and `analyze` tools record each
step of an investigation in it, so that step N+1 (possibly served by another server process
on the same machine, or after a restart) sees steps 1..N.

Concurrency model: one `sqlite3` connection per `ThreadStore`, opened with
`check_same_thread=False` and guarded by a `threading.Lock`, because callers run the
synchronous API in anyio worker threads. Between processes sharing one file, WAL mode,
a `busy_timeout` and `BEGIN IMMEDIATE` write transactions keep writes serialised: two
processes recording steps of the same thread can never interleave half-done writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import platformdirs

from exai_mcp.errors import ConfigError, InputError, ThreadError

__all__ = ["SCHEMA_VERSION", "Step", "Thread", "ThreadStore", "default_db_path"]

SCHEMA_VERSION = 1
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
    may be shared by many worker threads.
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
        self._lock = threading.Lock()
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

    def create(self, tool: str, kind: str | None) -> Thread:
        """Start a new empty thread; purges expired threads first so the file stays small."""
        _require_text("tool", tool)
        thread_id = str(uuid.uuid4())
        with self._lock, self._write():
            now = self._clock()
            self._purge(now)
            self._conn.execute(
                "INSERT INTO threads (id, tool, kind, created_at, updated_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (thread_id, tool, kind, now, now, now + self.ttl_seconds),
            )
            return self._load(thread_id, now)

    def get(self, thread_id: str) -> Thread:
        """The thread with its steps; ThreadError if unknown or expired (never creates one)."""
        with self._lock, self._write():
            # A write transaction because an expired thread is deleted right here.
            return self._load(thread_id, self._clock())

    def record_step(self, thread_id: str, number: int, tool: str, payload: dict) -> Thread:
        """Store step `number`: replaces a resent step, drops later steps on backtracking.

        Clients retry and go back; both must leave exactly one copy of each step number,
        and nothing after the step being (re)recorded.
        """
        _require_step_number(number)
        _require_text("tool", tool)
        encoded = _encode(payload)
        with self._lock, self._write():
            now = self._clock()
            self._load_row(thread_id, now)
            kept = self._conn.execute(
                "SELECT COUNT(*) FROM steps WHERE thread_id = ? AND number < ?",
                (thread_id, number),
            ).fetchone()[0]
            if kept + 1 > self.max_turns:
                raise self._full_error(thread_id)
            self._conn.execute(
                "DELETE FROM steps WHERE thread_id = ? AND number >= ?", (thread_id, number)
            )
            self._conn.execute(
                "INSERT INTO steps (thread_id, number, tool, payload, recorded_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (thread_id, number, tool, encoded, now),
            )
            self._touch(thread_id, now)
            return self._load(thread_id, now)

    def append_step(self, thread_id: str, tool: str, payload: dict) -> Thread:
        """Store a step after the last one (e.g. `analyze` continuing a workflow thread)."""
        _require_text("tool", tool)
        encoded = _encode(payload)
        with self._lock, self._write():
            now = self._clock()
            self._load_row(thread_id, now)
            count, last = self._conn.execute(
                "SELECT COUNT(*), COALESCE(MAX(number), 0) FROM steps WHERE thread_id = ?",
                (thread_id,),
            ).fetchone()
            if count + 1 > self.max_turns:
                raise self._full_error(thread_id)
            self._conn.execute(
                "INSERT INTO steps (thread_id, number, tool, payload, recorded_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (thread_id, last + 1, tool, encoded, now),
            )
            self._touch(thread_id, now)
            return self._load(thread_id, now)

    def update_step_payload(self, thread_id: str, number: int, payload: dict) -> Thread:
        """Replace the payload of an existing step (e.g. to attach the expert verdict)."""
        _require_step_number(number)
        encoded = _encode(payload)
        with self._lock, self._write():
            now = self._clock()
            self._load_row(thread_id, now)
            cursor = self._conn.execute(
                "UPDATE steps SET payload = ? WHERE thread_id = ? AND number = ?",
                (encoded, thread_id, number),
            )
            if cursor.rowcount == 0:
                raise ThreadError(
                    f"continuation_id '{thread_id}' has no step {number}; "
                    "record the step before attaching results to it"
                )
            self._touch(thread_id, now)
            return self._load(thread_id, now)

    def purge_expired(self) -> int:
        """Delete every thread whose TTL has run out; returns how many were deleted."""
        with self._lock, self._write():
            return self._purge(self._clock())

    def close(self) -> None:
        """Close the connection; further calls fail. Safe to call twice."""
        with self._lock:
            if not self._closed:
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

    def _write(self) -> _Transaction:
        if self._closed:
            raise RuntimeError("ThreadStore is closed")
        return _Transaction(self._conn)

    def _purge(self, now: float) -> int:
        return self._conn.execute("DELETE FROM threads WHERE expires_at <= ?", (now,)).rowcount

    def _touch(self, thread_id: str, now: float) -> None:
        self._conn.execute(
            "UPDATE threads SET updated_at = ?, expires_at = ? WHERE id = ?",
            (now, now + self.ttl_seconds, thread_id),
        )

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


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`; `ROLLBACK` on an unexpected exception.

    A ThreadError commits: it is raised before any step is written, and the one write that
    may precede it (deleting an expired thread) must stick.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        # BEGIN IMMEDIATE takes the write lock up front, waiting up to busy_timeout, so a
        # read-then-write sequence cannot be overtaken by another process.
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None or issubclass(exc_type, ThreadError):
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")


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
