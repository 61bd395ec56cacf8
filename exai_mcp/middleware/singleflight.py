"""Identical concurrent calls run once; every waiter gets the same result or the same error.

    flights = SingleFlight(task_group, grace=10)
    result = await flights.run(key, work, deadline=deadline, progress=reporter)

The shared execution belongs to no single caller: it runs in the server's task group, and each
caller only waits for it. It runs until the latest deadline among its waiters: a client's retry
that joins late is given its own full deadline, not what is left of the first caller's. A cancelled waiter just leaves. When the last waiter has left, the
execution goes on for `grace` seconds so that an identical call arriving then (a client retrying
after its own timeout) joins it instead of paying for a second provider call; when the grace
period ends with nobody waiting, the execution is cancelled, which aborts its provider request.
`grace=0` cancels at once. The entry is removed on every exit path: success, error, deadline,
cancellation and grace expiry. Errors are handed to the waiters, never kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup

from exai_mcp.errors import ExaiError
from exai_mcp.middleware.call import Answer, Call, Next
from exai_mcp.middleware.deadline import Deadline

T = TypeVar("T")
log = logging.getLogger(__name__)


class Flight(Generic[T]):
    """One shared execution and the callers waiting for it."""

    __slots__ = (
        "_grace_scope",
        "deadline",
        "done",
        "error",
        "key",
        "last_message",
        "listeners",
        "result",
        "scope",
        "waiters",
    )

    def __init__(self, key: str, deadline: Deadline) -> None:
        self.key = key
        self.deadline = deadline.copy()
        self.done = anyio.Event()
        self.scope = anyio.CancelScope()
        self.waiters = 0
        self.listeners: list[Callable[[str], None]] = []
        self.last_message: str | None = None
        self.result: T | None = None
        self.error: BaseException | None = None
        self._grace_scope: anyio.CancelScope | None = None

    def report(self, message: str) -> None:
        """Progress from the execution, fanned out to every waiter's own progress token."""
        self.last_message = message
        for listener in list(self.listeners):
            listener(message)


class SingleFlight(Generic[T]):
    __slots__ = ("_flights", "_tg", "coalesced", "grace", "grace_cancellations")

    def __init__(self, task_group: TaskGroup, *, grace: float) -> None:
        self._tg = task_group
        self.grace = grace
        self._flights: dict[str, Flight[T]] = {}
        self.coalesced = 0
        self.grace_cancellations = 0

    def __len__(self) -> int:
        return len(self._flights)

    async def run(
        self,
        key: str,
        work: Callable[[Flight[T]], Awaitable[T]],
        *,
        deadline: Deadline,
        progress: Callable[[str], None] | None = None,
    ) -> T:
        flight = self._flights.get(key)
        if flight is None:
            flight = Flight[T](key, deadline)
            self._flights[key] = flight
            self._tg.start_soon(self._execute, flight, work, name=f"flight {key[:12]}")
        else:
            self.coalesced += 1
            flight.deadline.extend_to(deadline.at)
            if flight._grace_scope is not None:
                flight._grace_scope.cancel()
        flight.waiters += 1
        if progress is not None:
            flight.listeners.append(progress)
            if flight.last_message is not None:
                progress(flight.last_message)  # a late joiner hears where things stand
        try:
            await flight.done.wait()
        finally:
            flight.waiters -= 1
            if progress is not None:
                flight.listeners.remove(progress)
            if flight.waiters == 0 and not flight.done.is_set():
                self._abandon(flight)
        if flight.error is not None:
            raise flight.error
        return flight.result  # type: ignore[return-value]

    async def _execute(self, flight: Flight[T], work: Callable[[Flight[T]], Awaitable[T]]) -> None:
        try:
            with flight.scope, flight.deadline.enforce("the shared execution"):
                flight.result = await work(flight)
        except ExaiError as exc:
            flight.error = exc
        except Exception as exc:
            log.exception("shared execution %s failed", flight.key[:12])
            flight.error = exc
        finally:
            if flight.scope.cancelled_caught and flight.error is None and flight.result is None:
                flight.error = ExaiError("the shared execution was cancelled")
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
            if flight._grace_scope is not None:
                flight._grace_scope.cancel()
            flight.done.set()

    def _abandon(self, flight: Flight[T]) -> None:
        """The last waiter left: cancel now, or after the grace period unless someone joins."""
        if self.grace <= 0:
            self._cancel(flight)
        else:
            self._tg.start_soon(self._expire_after_grace, flight)

    async def _expire_after_grace(self, flight: Flight[T]) -> None:
        with anyio.CancelScope() as scope:
            flight._grace_scope = scope
            await anyio.sleep(self.grace)
            if flight.waiters == 0 and not flight.done.is_set():
                self._cancel(flight)
        if flight._grace_scope is scope:
            flight._grace_scope = None

    def _cancel(self, flight: Flight[T]) -> None:
        self.grace_cancellations += 1
        # Forget it first: a call arriving from now on starts a fresh execution.
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        flight.scope.cancel()


class ShareIdenticalCalls:
    """Layer: callers of identical calls wait for one execution; below it, the call is the
    shared execution (its deadline, progress fanned out to every waiter)."""

    def __init__(self, flights: SingleFlight[Answer]) -> None:
        self.flights = flights

    async def __call__(self, call: Call, call_next: Next) -> Answer:
        if call.key is None:
            return await call_next(call)

        async def shared(flight: Flight[Answer]) -> Answer:
            answer: Answer = await call_next(
                call.replace(deadline=flight.deadline, report=flight.report)
            )
            return answer

        return await self.flights.run(
            call.key, shared, deadline=call.deadline, progress=call.report
        )


class ServerFlights(Protocol):
    """Single-flight between server processes (`shared.flights.SharedFlights` over Redis)."""

    async def run(
        self,
        key: str,
        work: Callable[[], Awaitable[Answer]],
        *,
        deadline: Deadline,
        report: Callable[[str], None],
    ) -> Answer: ...


class ShareAcrossServers:
    """Layer, inside this process's shared execution: with EXAI_REDIS_URL, one execution per
    key across every server on that Redis; without it (`flights=None`), nothing to do."""

    def __init__(self, flights: ServerFlights | None) -> None:
        self.flights = flights

    async def __call__(self, call: Call, call_next: Next) -> Answer:
        if self.flights is None or call.key is None:
            answer: Answer = await call_next(call)
            return answer
        return await self.flights.run(
            call.key, lambda: call_next(call), deadline=call.deadline, report=call.report
        )
