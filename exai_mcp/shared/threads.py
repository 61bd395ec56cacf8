"""Workflow threads in Redis, so a thread started on one server continues on another.

    store = RedisThreadStore(url, prefix="exai:", ttl_hours=24, max_turns=50, timeout=1.0)
    thread = store.edit(continuation_id, lambda editor: editor.record(2, "workflow", payload))

The same API and the same rules as the SQLite `ThreadStore` (it is one, with another engine):
a resent step is stored once, a known step number with new content backtracks (later steps
dropped), a lower unknown number is inserted, each thread holds at most EXAI_MAX_THREAD_TURNS
steps, and the TTL restarts with every write. The rules live in `ThreadEditor`, shared with
the SQLite store; here its row writes have nothing to do, because the thread is one JSON value
written as a whole when the edit commits.

An edit is optimistic: WATCH the thread's key, read it, run `change`, write in MULTI/EXEC; if
another process wrote the thread meanwhile, the edit runs again on the new thread (at most
EDIT_ATTEMPTS times, then BusyError). So `change` must only use its editor, as it must with
SQLite. The key expires a while after the thread's own expiry: a read in between says
"expired", as with SQLite before its purge, and afterwards "unknown".

When Redis cannot serve (every operation has EXAI_REDIS_TIMEOUT_SECS), threads go to the
in-process `fallback` store and the outage is logged once; a thread the fallback holds is found
there after Redis is back too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError
from redis.retry import Retry

from exai_mcp.errors import BusyError, ThreadError
from exai_mcp.redact import redact_url
from exai_mcp.store.threads import (
    Maintenance,
    NewThread,
    Step,
    Thread,
    ThreadEditor,
    ThreadStore,
    _require_text,
    _snapshot,
    check_thread_limits,
    new_thread_id,
)

T = TypeVar("T")
log = logging.getLogger("exai_mcp.shared")

EDIT_ATTEMPTS = 100  # optimistic retries before a busy error: only concurrent writers cause one
KEEP_EXPIRED_SECS = 3600  # how long an expired thread still says "expired" rather than "unknown"


class _SnapshotOnly:
    """Stands in for the SQLite connection the editor writes rows through: in Redis the
    editor's final snapshot is written as a whole instead."""

    def execute(self, *_args: Any) -> None:
        return None


class RedisThreadStore(ThreadStore):
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl_hours: float = 24,
        max_turns: int = 50,
        timeout: float = 1.0,
        fallback: ThreadStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_thread_limits(ttl_hours, max_turns)
        self.path = redact_url(url)
        self.prefix = prefix
        self.ttl_hours = ttl_hours
        self.max_turns = max_turns
        self.fallback = fallback
        self._clock = clock
        self._lock = threading.RLock()
        self._local = threading.local()
        self._closed = False
        self._conn = _SnapshotOnly()  # type: ignore[assignment]
        self._degraded = False
        self._client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    # -- what differs from SQLite ---------------------------------------------------------

    @property
    def journal_mode(self) -> str:
        return "redis"

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, thread_id: str) -> Thread:
        self._refuse_nested()
        self._check_open()
        try:
            raw = self._client.get(self._key(thread_id))
        except RedisError as exc:
            return self._degrade(exc).get(thread_id)
        self._recovered()
        if raw is None:
            if self.fallback is not None and self._fallback_has(thread_id):
                return self.fallback.get(thread_id)
            raise self._unknown(thread_id)
        thread = _decode(raw)
        if thread.expires_at <= self._clock():
            raise self._expired(thread_id)
        return thread

    def edit(self, thread_id: str, change: Callable[[ThreadEditor], T]) -> T:
        try:
            return self._optimistic(thread_id, None, change)
        except RedisError as exc:
            return self._degrade(exc).edit(thread_id, change)
        except ThreadError:
            if self.fallback is not None and self._fallback_has(thread_id):
                return self.fallback.edit(thread_id, change)
            raise

    def create_and_edit(
        self,
        tool: str,
        kind: str | None,
        change: Callable[[ThreadEditor], T],
        *,
        thread_id: str | None = None,
    ) -> T:
        _require_text("tool", tool)
        new_id = thread_id or new_thread_id()
        try:
            return self._optimistic(new_id, (tool, kind), change)
        except RedisError as exc:
            return self._degrade(exc).create_and_edit(tool, kind, change, thread_id=new_id)

    def create(self, tool: str, kind: str | None) -> Thread:
        return self.create_and_edit(tool, kind, _snapshot)

    def create_all(self, threads: Sequence[NewThread]) -> list[Exception | None]:
        """One by one: each thread is one key, written in its own transaction."""
        outcomes: list[Exception | None] = []
        for new in threads:
            try:
                self.create_and_edit(new.tool, new.kind, new.change, thread_id=new.thread_id)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

    def purge_expired(self) -> int:
        return 0  # Redis expires the keys itself

    def maintain(self) -> Maintenance:
        return Maintenance(purged=0, pages_freed=0, pages=0)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._client.close()
                if self.fallback is not None:
                    self.fallback.close()

    def _unknown(self, thread_id: str) -> ThreadError:
        return ThreadError(
            f"continuation_id '{thread_id}' is unknown: it was never created on this "
            f"deployment's Redis ({self.path}, prefix {self.prefix!r}) or expired "
            f"(EXAI_THREAD_TTL_HOURS={self.ttl_hours:g} hours after its last step); start a "
            "new thread without continuation_id"
        )

    # -- the optimistic edit --------------------------------------------------------------

    def _key(self, thread_id: str) -> str:
        return f"{self.prefix}thread:{thread_id}"

    def _optimistic(
        self,
        thread_id: str,
        new: tuple[str, str | None] | None,
        change: Callable[[ThreadEditor], T],
    ) -> T:
        self._refuse_nested()
        self._check_open()
        key = self._key(thread_id)
        with self._client.pipeline(transaction=True) as pipe:
            for _ in range(EDIT_ATTEMPTS):
                try:
                    pipe.watch(key)
                    now = self._clock()
                    if new is None:
                        thread = self._loaded(pipe, key, thread_id, now)
                    else:
                        thread = Thread(
                            id=thread_id, tool=new[0], kind=new[1], created_at=now,
                            updated_at=now, expires_at=now + self.ttl_seconds,
                        )  # fmt: skip
                    result, written = self._run_change(thread, now, change, is_new=new is not None)
                    pipe.multi()
                    if written is not None:
                        pipe.set(key, _encode(written), px=self._keep_ms(written, now))
                    pipe.execute()
                    self._recovered()
                    return result
                except WatchError:
                    continue  # another process wrote the thread: decide again on its state
                finally:
                    pipe.reset()
        raise BusyError(
            f"the thread store ({self.path}) kept changing under this edit: {EDIT_ATTEMPTS} "
            "other writes to the same thread came in between; retry the call"
        )

    def _loaded(self, pipe: Any, key: str, thread_id: str, now: float) -> Thread:
        raw = pipe.get(key)
        if raw is None:
            raise self._unknown(thread_id)
        thread = _decode(raw)
        if thread.expires_at <= now:
            pipe.multi()
            pipe.delete(key)
            pipe.execute()
            raise self._expired(thread_id)
        return thread

    def _run_change(
        self, thread: Thread, now: float, change: Callable[[ThreadEditor], T], *, is_new: bool
    ) -> tuple[T, Thread | None]:
        """`change` on an editor; what it returns, and the thread to write (None: unchanged)."""
        self._local.editing = True
        editor = ThreadEditor(self, thread, now)
        try:
            result = change(editor)
            if editor._broken is not None:
                raise editor._broken
        finally:
            editor._closed = True
            self._local.editing = False
        return result, editor.thread if editor.thread is not thread or is_new else None

    def _keep_ms(self, thread: Thread, now: float) -> int:
        return max(1, int((thread.expires_at - now + KEEP_EXPIRED_SECS) * 1000))

    # -- when Redis fails -------------------------------------------------------------------

    def _degrade(self, exc: BaseException) -> ThreadStore:
        if self.fallback is None:
            raise BusyError(
                f"the thread store ({self.path}) cannot be reached; retry the call"
            ) from None
        if not self._degraded:
            self._degraded = True
            log.warning(
                "threads: Redis at %s failed (%s); new threads are kept in this process "
                "until it answers again",
                self.path,
                type(exc).__name__,
            )
        return self.fallback

    def _recovered(self) -> None:
        if self._degraded:
            self._degraded = False
            log.warning("threads: Redis at %s answers again", self.path)

    def _fallback_has(self, thread_id: str) -> bool:
        assert self.fallback is not None
        try:
            self.fallback.get(thread_id)
        except ThreadError as exc:
            return "expired" in str(exc)
        return True


def _encode(thread: Thread) -> str:
    return json.dumps(asdict(thread), ensure_ascii=False, separators=(",", ":"))


def _decode(raw: str) -> Thread:
    data = json.loads(raw)
    data["steps"] = tuple(Step(**step) for step in data["steps"])
    return Thread(**data)
