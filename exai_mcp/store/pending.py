"""New threads written after the reply: the caller gets its thread id at once, the write follows.

    writes = PendingWrites(store, task_group, defer=True)
    thread_id = new_thread_id()
    await writes.write_new(NewThread(thread_id, "analyze", None, first_step))
    ...                               # reply with thread_id: the write follows
    await writes.settled(thread_id)   # before anything reads or edits that thread
    await writes.drain()              # at shutdown, before the store closes

Why: a caller without a continuation_id gets a thread of its own, even when its answer came
from the cache. Writing it in a worker thread before the reply cost most of a cache hit's
time, mostly in the hop to the worker thread and back, not in SQLite. The reply needs only the id, which is chosen
before the write, so the reply goes out first, and the threads queued within `FLUSH_DELAY` of
each other are written together: one hop and one transaction for a batch, not one each.

What keeps that safe:
- in this server, every read or edit of a thread by id waits for that thread's pending write
  (`settled`), which writes the batch at once instead of after the delay, so a follow-up
  never misses the thread it continues;
- each thread has a savepoint of its own in the batch's transaction, so one that fails loses
  only itself: it is logged, and a call that later names its id is told that the thread was
  not saved, and why, instead of "unknown thread";
- one batch at a time, in a worker thread of its own, so a burst of writes never takes the
  worker threads the stdio transport reads and writes with;
- at most `MAX_PENDING` threads wait to be written: past that, a reply waits for the batch
  being written. Otherwise a client sending calls back to back outruns the writer (the
  event loop never idles, and the worker thread waits up to 5 ms for the GIL at each
  step), and every unwritten thread, answer included, piles up in memory;
- `drain` runs before the store closes, so a server that stops (stdin closed, SIGTERM) keeps
  every thread it answered with. Only a killed process can lose the last `FLUSH_DELAY`.

Only a store no other server answers from is written this way. Several servers behind one
address share threads in Redis, and a client's follow-up may reach another server a moment
after the reply: there (`defer=False`) a new thread is written before the reply, as it always
was. Stdio servers sharing one SQLite file each answer their own client, and a thread moves
between them only when a person carries its id from one window to another.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import anyio
from anyio.abc import TaskGroup

from exai_mcp.errors import ThreadError
from exai_mcp.store.threads import NewThread, ThreadStore

log = logging.getLogger("exai_mcp.store")

FLUSH_DELAY = 0.02  # seconds a queued thread waits for others to share its hop and transaction
MAX_PENDING = 64  # threads queued or being written; a reply past it waits for a batch
MAX_FAILURES_KEPT = 256  # thread ids whose write failed, remembered for a clear error later


class PendingWrites:
    """The thread writes still to run after their replies; see the module docstring."""

    __slots__ = (
        "_defer",
        "_delay",
        "_failed",
        "_flushing",
        "_hurry",
        "_max_pending",
        "_pending",
        "_queue",
        "_store",
        "_task_group",
        "_worker",
    )

    def __init__(
        self,
        store: ThreadStore,
        task_group: TaskGroup,
        *,
        defer: bool,
        flush_delay: float = FLUSH_DELAY,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._store = store
        self._max_pending = max_pending
        self._task_group = task_group
        self._defer = defer
        self._delay = flush_delay
        self._worker = anyio.CapacityLimiter(1)
        self._queue: list[NewThread] = []
        self._pending: dict[str, anyio.Event] = {}  # queued or being written, by thread id
        self._failed: OrderedDict[str, str] = OrderedDict()
        self._hurry = anyio.Event()  # set: write what is queued now, without the delay
        self._flushing = False

    async def write_new(self, new: NewThread) -> None:
        """Create `new`: queued to be written after the reply, or, when other servers answer
        from this store, now (its errors are then the caller's, as with `create_and_edit`).
        """
        if not self._defer:
            await anyio.to_thread.run_sync(
                lambda: self._store.create_and_edit(
                    new.tool, new.kind, new.change, thread_id=new.thread_id
                )
            )
            return
        while len(self._pending) >= self._max_pending:  # the writer is behind: wait for it
            self._hurry.set()
            await next(iter(self._pending.values())).wait()
        if new.thread_id in self._pending:  # checked after the wait, when nothing can come between
            raise ValueError(f"thread {new.thread_id} already has a pending write")
        self._pending[new.thread_id] = anyio.Event()
        self._queue.append(new)
        if not self._flushing:
            self._flushing = True
            self._task_group.start_soon(self._flush)

    async def _flush(self) -> None:
        # Shielded: a thread its caller was told about is written even as the server stops.
        # Nothing here waits unboundedly: the delay is short and each write has its timeout.
        with anyio.CancelScope(shield=True):
            try:
                while self._queue:
                    with anyio.move_on_after(self._delay):
                        await self._hurry.wait()
                    self._hurry = anyio.Event()
                    batch, self._queue = self._queue, []
                    failures = await self._write(batch)
                    for new, failure in zip(batch, failures, strict=True):
                        if failure is not None:
                            self._remember_failure(new.thread_id, failure)
                        self._pending.pop(new.thread_id).set()
            finally:
                self._flushing = False

    async def _write(self, batch: list[NewThread]) -> list[str | None]:
        """Why each thread of `batch` was not written, or None: the batch's transaction
        failing fails them all."""
        try:
            outcomes = await anyio.to_thread.run_sync(
                self._store.create_all, batch, limiter=self._worker
            )
        except Exception as exc:
            return [_reason(exc)] * len(batch)
        return [None if exc is None else _reason(exc) for exc in outcomes]

    def _remember_failure(self, thread_id: str, reason: str) -> None:
        log.error("thread %s was not saved: %s", thread_id, reason)
        self._failed[thread_id] = reason
        while len(self._failed) > MAX_FAILURES_KEPT:
            self._failed.popitem(last=False)

    async def settled(self, thread_id: str) -> None:
        """Return once `thread_id` has no write pending; ThreadError if its write failed."""
        done = self._pending.get(thread_id)
        if done is not None:
            self._hurry.set()
            await done.wait()
        reason = self._failed.get(thread_id)
        if reason is not None:
            raise ThreadError(
                f"continuation_id '{thread_id}' names a thread this server could not save "
                f"({reason}); start a new thread without continuation_id"
            )

    async def drain(self) -> None:
        """Return once every write started so far has ended (written at once, no delay)."""
        while self._pending:
            self._hurry.set()
            await next(iter(self._pending.values())).wait()


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


__all__ = ["FLUSH_DELAY", "PendingWrites"]
