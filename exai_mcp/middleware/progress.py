"""Progress notifications for one request: the latest news now, and a heartbeat between.

    reporter = ProgressReporter(send=session.report_progress, interval=5)
    async with reporter.running():
        reporter.update("calling kimi:kimi-k2")      # cheap and synchronous: no awaiting
        ...
    # nothing is sent after the block exits

A client that resets its timeout on progress never gives up on a call that is still working:
the last message is re-sent at least every `interval` seconds. Updates arriving in a burst
(tokens streaming in) are coalesced so a fast stream cannot flood the client. A client that
sent no progress token gets no reporter at all: no ticking task, no notifications.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

from exai_mcp.middleware.call import Call, Next

log = logging.getLogger(__name__)

SendProgress = Callable[[float, float | None, str | None], Awaitable[None]]
MIN_SPACING = 0.25  # seconds between two notifications of one request


class ProgressReporter:
    __slots__ = ("_changed", "_count", "_message", "_send", "interval")

    def __init__(self, send: SendProgress | None, interval: float) -> None:
        self._send = send
        self.interval = interval
        self._message = "started"
        self._count = 0
        self._changed = anyio.Event()

    def update(self, message: str) -> None:
        self._message = message
        self._changed.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ProgressReporter]:
        if self._send is None:
            yield self
            return
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._run)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The ticker never raises, so the group holds the body's own error: pass it on
            # as it was raised, so callers can catch ExaiError and friends directly.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _run(self) -> None:
        spacing = min(MIN_SPACING, self.interval / 2)
        started = anyio.current_time()
        next_beat = started + self.interval
        last_sent: str | None = None
        while True:
            with anyio.move_on_at(next_beat):
                await self._changed.wait()
            self._changed = anyio.Event()
            self._count += 1
            message = self._message
            if message == last_sent:  # a heartbeat: say how long it has been going on
                message = f"{message} (still working, {anyio.current_time() - started:.0f} s)"
            last_sent = self._message
            try:
                assert self._send is not None
                await self._send(self._count, None, message)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # a client gone away must not fail the call
                log.debug("progress notification not sent: %s", exc)
            next_beat = anyio.current_time() + self.interval
            await anyio.sleep(spacing)  # coalesce bursts, e.g. tokens streaming in


class ReportProgress:
    """Layer: progress for this caller while its call runs, if it asked for progress."""

    def __init__(self, interval: float) -> None:
        self.interval = interval

    async def __call__(self, call: Call, call_next: Next) -> object:
        if call.send_progress is None:
            return await call_next(call)
        reporter = ProgressReporter(call.send_progress, self.interval)
        async with reporter.running():
            return await call_next(call.replace(report=reporter.update))
