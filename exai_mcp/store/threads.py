"""Conversation threads for multi-step tools, kept in SQLite so they survive restarts.

A thread is what a `continuation_id` names: the `workflow` and `analyze` tools record each
step of an investigation in it, so that step N+1 (possibly served by another server process
on the same machine, or after a restart) sees steps 1..N.

Reading is one plain SELECT on a connection of its own: `get` never takes the write lock, so
it never waits for a writer, in this process or another. Every change to a thread is one
`BEGIN IMMEDIATE` transaction, and a caller whose write depends on what it read decides
inside it:

    def next_step(editor: ThreadEditor) -> Thread:
        return editor.record(editor.thread.last_step_number + 1, "workflow", payload)

    thread = store.edit(continuation_id, next_step)

`change` sees the thread as it is when the write lock is taken (loaded by one query), so no
other writer (thread or process) can slip in between its read and its write; if it raises,
nothing it wrote stays. Each write touches only the rows it changes, and the editor's snapshot
follows in memory. `record_step`, `append_step` and `update_step_payload` are one-write edits.

Expired threads are deleted by `maintain()`, which the server runs every few minutes in a
worker thread (`run_maintenance`): it purges them in short batches and gives free pages back
to the file system (the file uses incremental auto-vacuum; an older file is converted once,
when it is opened). A read that finds an expired thread reports it as expired; an edit
deletes it at once.

Opening checks the location, sets up WAL mode and the schema, and refuses a `threads` or
`steps` table with another program's columns. Every problem raises `StoreUnusable`, one line
naming EXAI_STATE_DB, the path, the reason and what to do; a file locked by another process
gets OPEN_ATTEMPTS tries over about two seconds first.

Concurrency model: one connection for writes and one for reads (a single one for
`:memory:`), each guarded by its lock and opened with `check_same_thread=False`, because
callers run the synchronous API in anyio worker threads. Between processes sharing one file,
WAL mode lets reads go on while one process writes, and `BEGIN IMMEDIATE` with a busy timeout
keeps writes serialised: two processes editing the same thread can never interleave. A call
that cannot get the write lock within BUSY_TIMEOUT_MS raises `BusyError` (retry the call).
`change` must not call the store itself (RuntimeError rather than a deadlock) and should be
quick: other writers wait for it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import platformdirs

from exai_mcp.errors import (
    BusyError,
    ConfigError,
    InputError,
    StoreUnusable,
    ThreadError,
)
from exai_mcp.store.diagnosis import check_location, is_busy, unusable

__all__ = [
    "MAINTENANCE_INTERVAL",
    "SCHEMA_VERSION",
    "Maintenance",
    "Step",
    "Thread",
    "ThreadEditor",
    "ThreadStore",
    "default_db_path",
]

T = TypeVar("T")
log = logging.getLogger("exai_mcp.store")

SCHEMA_VERSION = 1
_MOVE_ASIDE = 1 << 40  # far above any step number: where steps wait while they are renumbered
BUSY_TIMEOUT_MS = 5000  # how long a call waits for another process's write lock
# A file locked at start-up: 3 tries of 0.5 s with 0.25 s between them, about 2 s in all.
OPEN_ATTEMPTS = 3
OPEN_BUSY_TIMEOUT_MS = 500
OPEN_RETRY_PAUSE = 0.25
# SQLite's page cache, per connection. Its default (2 MiB) fills as the file grows, in each of
# the two connections; threads are read and written by id, and a page not cached comes from
# the OS's file cache in microseconds.
PAGE_CACHE_KIB = 256
CACHE_SIZE = f"PRAGMA cache_size = -{PAGE_CACHE_KIB}"  # negative: KiB, not pages
MAINTENANCE_INTERVAL = 300.0  # seconds between two `maintain()` runs in a server
PURGE_BATCH = 500  # threads deleted per write transaction, so a purge never holds the lock long
PURGE_BATCHES = 100  # batches per `maintain()`; a larger backlog goes on the next run
VACUUM_PAGES = 2048  # free pages given back per `maintain()` (8 MiB at 4 KiB pages)
MEMORY = ":memory:"
_AUTO_VACUUM_INCREMENTAL = 2

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
_COLUMNS = {
    "threads": ("id", "tool", "kind", "created_at", "updated_at", "expires_at"),
    "steps": ("thread_id", "number", "tool", "payload", "recorded_at"),
}
# The thread and its steps in one query: one consistent read, no second round trip.
_LOAD = (
    "SELECT t.id, t.tool, t.kind, t.created_at, t.updated_at, t.expires_at, "
    "s.number, s.tool, s.payload, s.recorded_at "
    "FROM threads AS t LEFT JOIN steps AS s ON s.thread_id = t.id "
    "WHERE t.id = ? ORDER BY s.number"
)


def check_thread_limits(ttl_hours: float, max_turns: int) -> None:
    """The limits every thread store (SQLite or Redis) needs to make sense."""
    if ttl_hours <= 0:
        raise ConfigError(f"EXAI_THREAD_TTL_HOURS must be > 0, got {ttl_hours}")
    if max_turns < 1:
        raise ConfigError(f"EXAI_MAX_THREAD_TURNS must be >= 1, got {max_turns}")


def new_thread_id() -> str:
    """A fresh thread id: random, so a caller can be given it before the thread is written."""
    return str(uuid.uuid4())


def default_db_path() -> Path:
    """Where threads live unless EXAI_STATE_DB says otherwise: the per-user data directory."""
    return platformdirs.user_data_path("exai-mcp") / "threads.sqlite3"


@dataclass(frozen=True, slots=True)
class NewThread:
    """A thread to create and its first writes: what `create_and_edit` takes, id included."""

    thread_id: str
    tool: str
    kind: str | None
    change: Callable[[ThreadEditor], object]


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


@dataclass(frozen=True, slots=True)
class Maintenance:
    """What one `ThreadStore.maintain()` did: threads purged, and the file's size in pages."""

    purged: int
    pages_freed: int
    pages: int


class ThreadStore:
    """SQLite-backed thread storage with a TTL from last activity and a cap on steps.

    The API is synchronous on purpose: sqlite3 is blocking, so async callers wrap calls in
    `anyio.to_thread.run_sync`. One store may be shared by many worker threads. `edit` and
    `create_and_edit` are the one path that writes a thread (the other writing methods are
    shorthands for them); `maintain` deletes expired ones. Opening raises `StoreUnusable`
    (a ConfigError) when the file cannot serve.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        ttl_hours: float = 24,
        max_turns: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_thread_limits(ttl_hours, max_turns)
        self._is_memory = str(path) == MEMORY
        self.path = MEMORY if self._is_memory else str(Path(path).expanduser())
        self.ttl_hours = ttl_hours
        self.max_turns = max_turns
        self._clock = clock
        # Re-entrant so that a store call made from inside `change` fails instead of hanging.
        self._lock = threading.RLock()
        self._local = threading.local()  # `editing` is set while this thread runs a `change`
        self._closed = False
        self._conn, self._reader = self._open()
        self._identity = self._file_identity()  # what the writes must still be going to
        # `:memory:` is one database per connection, so there reads share the writer.
        self._read_lock = self._lock if self._is_memory else threading.Lock()

    # -- opening ------------------------------------------------------------------------

    def _open(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        """The writer (schema set up) and the reader; StoreUnusable for any problem."""
        if not self._is_memory:
            check_location(self.path)
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnusable(
                    self.path,
                    f"its directory cannot be created ({exc.strerror or exc})",
                    "point EXAI_STATE_DB at a file in a writable directory",
                ) from exc
        opened: list[sqlite3.Connection] = []
        try:
            writer = self._connect(OPEN_BUSY_TIMEOUT_MS)
            opened.append(writer)
            self._set_up(writer)
            writer.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            writer.execute(CACHE_SIZE)
            if self._is_memory:
                return writer, writer
            reader = self._connect(BUSY_TIMEOUT_MS)
            opened.append(reader)
            reader.execute("PRAGMA query_only = ON")
            reader.execute(CACHE_SIZE)
            reader.execute(_LOAD, ("",)).fetchall()  # fails here, not at the first call
            return writer, reader
        except BaseException as exc:
            for conn in opened:
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise unusable(self.path, exc) from exc
            raise

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE for writes).
        conn = sqlite3.connect(
            self.path,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """Pragmas and schema, retried while another process holds the file locked."""
        started = time.monotonic()
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            try:
                self._create_schema(conn)
                break
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                if attempt == OPEN_ATTEMPTS:
                    raise StoreUnusable(
                        self.path,
                        f"locked by another process: still locked after {OPEN_ATTEMPTS} tries "
                        f"over {time.monotonic() - started:.1f} s ({exc})",
                        "close the program holding it (a sqlite3 shell, a backup, another "
                        "application) or point EXAI_STATE_DB at another file",
                    ) from exc
                time.sleep(OPEN_RETRY_PAUSE)
        self._use_incremental_vacuum(conn)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Idempotent, and safe when several processes start at once."""
        conn.execute("PRAGMA foreign_keys = ON")
        self._check_schema(conn)  # before changing anything in another program's file
        # Takes effect only in a file without tables yet; older files: _use_incremental_vacuum.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        if not self._is_memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnusable(
                    self.path,
                    f"cannot use WAL mode (SQLite reports journal mode {mode!r})",
                    "put it on a local file system, or point EXAI_STATE_DB at a file on one",
                )
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._check_schema(conn)  # again: another process may have been first
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection) -> int:
        """The schema version; refuses a newer one, tables of ours with other columns, and
        a file holding any other table (another program's database is never changed)."""
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        foreign = sorted({name for (name,) in tables} - set(_COLUMNS))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise StoreUnusable(
                self.path,
                f"holds tables that are not exai-mcp's ({shown})",
                "point EXAI_STATE_DB at another file: this one belongs to another program",
            )
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreUnusable(
                self.path,
                f"has schema version {version}, newer than this exai-mcp understands "
                f"({SCHEMA_VERSION})",
                "upgrade exai-mcp, or point EXAI_STATE_DB at another file",
            )
        for table, expected in _COLUMNS.items():
            found = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            if found and set(found) != set(expected):
                raise StoreUnusable(
                    self.path,
                    f"its {table!r} table is not exai-mcp's (columns {', '.join(found)}; "
                    f"expected {', '.join(expected)})",
                    "point EXAI_STATE_DB at another file: this one belongs to another program",
                )
        return version

    def _use_incremental_vacuum(self, conn: sqlite3.Connection) -> None:
        """A file made without incremental auto-vacuum needs one VACUUM to switch it on."""
        if self._is_memory:
            return
        try:
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == _AUTO_VACUUM_INCREMENTAL:
                return
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")
        except sqlite3.OperationalError as exc:
            # The store works without it; it just does not shrink. The next start tries again.
            log.warning(
                "EXAI_STATE_DB=%s: could not switch on incremental vacuum (%s); the file will "
                "not shrink until a later start manages it",
                self.path,
                exc,
            )

    @property
    def journal_mode(self) -> str:
        """The journal mode SQLite reports ("wal" for files, "memory" for `:memory:`)."""
        with self._lock:
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ttl_seconds(self) -> float:
        return self.ttl_hours * 3600.0

    # -- public API ---------------------------------------------------------------------

    def edit(self, thread_id: str, change: Callable[[ThreadEditor], T]) -> T:
        """Load the thread and apply `change` to it in one write transaction.

        `change` gets a `ThreadEditor` whose `thread` is the current snapshot and returns
        what `edit` returns. If it raises, everything it wrote is rolled back and the
        exception propagates. ThreadError if the thread is unknown or expired (an expired
        thread is deleted); BusyError if another process kept the write lock too long.
        """
        return self._transact(lambda now: self._load(thread_id, now), change)

    def create_and_edit(
        self,
        tool: str,
        kind: str | None,
        change: Callable[[ThreadEditor], T],
        *,
        thread_id: str | None = None,
    ) -> T:
        """Create a thread and apply `change` to it in the same transaction.

        If `change` raises, no thread is left behind. `thread_id`: one from `new_thread_id()`,
        chosen before the write so a reply can carry it first (store/pending.py).
        """
        _require_text("tool", tool)
        new_id = thread_id or new_thread_id()
        return self._transact(lambda now: self._insert(new_id, tool, kind, now), change)

    def create_all(self, threads: Sequence[NewThread]) -> list[Exception | None]:
        """Create each thread as `create_and_edit` would, all in one write transaction: one
        commit for a batch of new threads (store/pending.py writes them so).

        Each has a savepoint of its own: one whose `change` fails leaves nothing behind, the
        others are kept, and the result says which failed and why. A failure of the
        transaction itself (another process holding the lock too long) raises.
        """
        outcomes: list[Exception | None] = []
        with self._writing() as conn:
            self._local.editing = True
            try:
                for new in threads:
                    conn.execute("SAVEPOINT new_thread")
                    try:
                        now = self._clock()
                        thread = self._insert(new.thread_id, new.tool, new.kind, now)
                        self._change(thread, now, new.change)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO new_thread")
                        outcomes.append(exc)
                    else:
                        outcomes.append(None)
                    conn.execute("RELEASE new_thread")
            finally:
                self._local.editing = False
        return outcomes

    def create(self, tool: str, kind: str | None) -> Thread:
        """Start a new empty thread."""
        return self.create_and_edit(tool, kind, _snapshot)

    def get(self, thread_id: str) -> Thread:
        """The thread with its steps; ThreadError if unknown or expired (never creates one).

        A plain read: it takes no write lock and waits for no writer. An expired thread is
        reported as such and left for `maintain()` (or the next edit) to delete.
        """
        self._refuse_nested()
        with self._read_lock:
            self._check_open()
            now = self._clock()
            try:
                rows = self._reader.execute(_LOAD, (thread_id,)).fetchall()
            except sqlite3.OperationalError as exc:
                self._raise_if_busy(exc)
                raise
        if not rows:
            raise self._unknown(thread_id)
        if rows[0][5] <= now:
            raise self._expired(thread_id)
        return _thread_from_rows(rows)

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
        """Delete the threads whose TTL has run out; returns how many were deleted.

        In batches of PURGE_BATCH, each its own short write transaction so that other
        writers get in between; at most PURGE_BATCHES batches, the rest on the next call.
        """
        total = 0
        for _ in range(PURGE_BATCHES):
            with self._writing() as conn:
                deleted = conn.execute(
                    "DELETE FROM threads WHERE id IN "
                    "(SELECT id FROM threads WHERE expires_at <= ? LIMIT ?)",
                    (self._clock(), PURGE_BATCH),
                ).rowcount
            total += deleted
            if deleted < PURGE_BATCH:
                break
        return total

    def maintain(self) -> Maintenance:
        """Purge expired threads, then give up to VACUUM_PAGES free pages back to the disk.

        Bounded work in short write transactions; the server runs it every
        MAINTENANCE_INTERVAL seconds in a worker thread (`run_maintenance`).
        BusyError if another process kept the write lock too long: try again later.
        """
        purged = self.purge_expired()
        self._refuse_nested()
        with self._lock:
            self._check_open()
            before = self._conn.execute("PRAGMA page_count").fetchone()[0]
            try:
                # executescript runs the pragma to the end; execute() frees one page per call.
                self._conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
                if not self._is_memory:
                    # Copies the freed file back so that the main file really shrinks;
                    # PASSIVE waits for nobody.
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.OperationalError as exc:
                self._raise_if_busy(exc)
                raise
            after = self._conn.execute("PRAGMA page_count").fetchone()[0]
        return Maintenance(purged=purged, pages_freed=before - after, pages=after)

    def close(self) -> None:
        """Close the connections; further calls fail. Safe to call twice."""
        self._refuse_nested()
        with self._lock, self._read_lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
                if self._reader is not self._conn:
                    self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _transact(
        self, open_thread: Callable[[float], Thread], change: Callable[[ThreadEditor], T]
    ) -> T:
        """`open_thread` then `change` in one `BEGIN IMMEDIATE` transaction."""
        self._refuse_nested()
        with self._lock:
            self._begin()
            self._local.editing = True
            try:
                try:
                    now = self._clock()
                    thread = open_thread(now)
                except ThreadError:
                    # Raised before anything but the deletion of an expired thread, which must
                    # stick: the next call should say "unknown", not "expired" again.
                    self._conn.execute("COMMIT")
                    raise
                result = self._change(thread, now, change)
                self._conn.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                self._rollback()
                self._raise_if_busy(exc)
                raise
            except BaseException:
                self._rollback()
                raise
            finally:
                self._local.editing = False

    def _change(self, thread: Thread, now: float, change: Callable[[ThreadEditor], T]) -> T:
        """`change` through an editor of `thread`, inside the transaction the caller holds."""
        editor = ThreadEditor(self, thread, now)
        try:
            result = change(editor)
            if editor._broken is not None:
                # `change` swallowed a write that failed half-way: keep none of it.
                raise editor._broken
            return result
        finally:
            editor._closed = True

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` ... `COMMIT` on the writer, `ROLLBACK` on any exception."""
        self._refuse_nested()
        with self._lock:
            self._begin()
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                self._raise_if_busy(exc)
                raise
            except BaseException:
                self._rollback()
                raise

    def _begin(self) -> None:
        self._check_open()
        if self._file_identity() != self._identity:
            # The connections still write to the old file, which nobody will open again:
            # every write from now on would be acknowledged and lost.
            raise StoreUnusable(
                self.path,
                "was deleted or replaced while the server ran, so nothing more can be saved",
                "restart the server, which then opens the file EXAI_STATE_DB names",
            )
        # BEGIN IMMEDIATE takes the write lock up front, waiting up to busy_timeout, so a
        # read-then-write sequence cannot be overtaken by another connection.
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._raise_if_busy(exc)
            raise

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file at `path` now; None in memory or when it is gone."""
        if self._is_memory:
            return None
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("ThreadStore is closed")

    def _refuse_nested(self) -> None:
        if getattr(self._local, "editing", False):
            raise RuntimeError(
                "ThreadStore was called from inside an edit; use the ThreadEditor instead"
            )

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _raise_if_busy(self, exc: sqlite3.OperationalError) -> None:
        """BusyError for a lock another process held too long; the caller re-raises the rest."""
        if is_busy(exc):
            raise BusyError(
                f"the thread store EXAI_STATE_DB={self.path} is busy with another process (its "
                f"lock was held for more than {BUSY_TIMEOUT_MS / 1000:g} s); retry the call"
            ) from exc

    def _insert(self, thread_id: str, tool: str, kind: str | None, now: float) -> Thread:
        thread = Thread(
            id=thread_id,
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

    def _load(self, thread_id: str, now: float) -> Thread:
        """The thread for an edit (one query); deletes it and raises if expired."""
        rows = self._conn.execute(_LOAD, (thread_id,)).fetchall()
        if not rows:
            raise self._unknown(thread_id)
        if rows[0][5] <= now:
            self._conn.execute("DELETE FROM threads WHERE id = ?", (thread_id,))
            raise self._expired(thread_id)
        return _thread_from_rows(rows)

    def _unknown(self, thread_id: str) -> ThreadError:
        return ThreadError(
            f"continuation_id '{thread_id}' is unknown: it was never created on this "
            f"server's store (EXAI_STATE_DB={self.path}) or was deleted (threads are "
            f"purged EXAI_THREAD_TTL_HOURS={self.ttl_hours:g} hours after their last "
            "step); start a new thread without continuation_id"
        )

    def _expired(self, thread_id: str) -> ThreadError:
        return ThreadError(
            f"continuation_id '{thread_id}' expired after "
            f"EXAI_THREAD_TTL_HOURS={self.ttl_hours:g} hours without activity; start a new "
            "thread without continuation_id and summarise the earlier findings in the first step"
        )

    def full_error(self, thread_id: str) -> ThreadError:
        """What a caller is told when `thread_id` has no room for another step."""
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
            raise self._store.full_error(self.thread.id)
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
            raise self._store.full_error(self.thread.id)
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
            raise self._store.full_error(self.thread.id)
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


def _thread_from_rows(rows: list[tuple]) -> Thread:
    """A Thread from the rows of `_LOAD` (at least one; step columns are NULL without steps)."""
    first = rows[0]
    steps = tuple(
        Step(number=n, tool=t, payload=json.loads(p), recorded_at=r)
        for *_, n, t, p, r in rows
        if n is not None
    )
    return Thread(
        id=first[0],
        tool=first[1],
        kind=first[2],
        created_at=first[3],
        updated_at=first[4],
        steps=steps,
        expires_at=first[5],
    )
