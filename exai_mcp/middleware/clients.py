"""A per-client concurrency limit: one busy client queues behind itself, not in front of others.

    clients = ClientLimits(per_client=8)
    async with clients.hold(call) as queued:   # at most 8 of this client's calls past here
        ...

A client is what `Call.client` names: an MCP session, a REST client's `X-Client-Id`, or
"stdio". Each client gets its own `TrackedLimiter` (FIFO, deadline-aware: a wait past the
request's deadline is `BusyError`), created on its first call and dropped as soon as it has no
holder and no waiter, so a server that sees many clients over its life keeps only the busy ones.
The permit is taken and given back by one `async with`: return, error, deadline and cancellation
(waiting or holding) all release it and drop an idle client's limiter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from exai_mcp.middleware.call import Call, Next
from exai_mcp.middleware.limits import Holder, TrackedLimiter


class ClientLimits:
    """One `TrackedLimiter` per client with a call in flight or waiting."""

    __slots__ = ("_limiters", "_users", "per_client")

    def __init__(self, per_client: int) -> None:
        self.per_client = per_client
        self._limiters: dict[str, TrackedLimiter] = {}
        self._users: dict[str, int] = {}
        """Calls holding or waiting per client: the limiter is dropped when it reaches zero."""

    @asynccontextmanager
    async def hold(self, call: Call) -> AsyncIterator[bool]:
        """Hold one of the client's permits; yields whether the call had to queue for it."""
        client = call.client
        limiter = self._limiters.get(client)
        if limiter is None:
            limiter = self._limiters[client] = TrackedLimiter(f"client {client}", self.per_client)
        self._users[client] = self._users.get(client, 0) + 1
        try:
            # FIFO: a call queues when every permit is out or others are already waiting.
            queued = limiter.in_use() >= limiter.total or limiter.waiting() > 0
            holder = Holder(call.request_id, call.tool, None)
            async with limiter.hold(holder, call.deadline, on_wait=call.report):
                yield queued
        finally:
            self._users[client] -= 1
            if self._users[client] == 0:  # no holder, no waiter: nothing to remember
                del self._users[client]
                del self._limiters[client]

    def clients(self) -> dict[str, TrackedLimiter]:
        """The limiters of the clients with a call in flight or waiting, by client id."""
        return dict(self._limiters)

    def waiting(self) -> int:
        return sum(lim.waiting() for lim in self._limiters.values())


class ClientLimit:
    """Layer: at most EXAI_CLIENT_MAX_INFLIGHT calls of one client at once below this point.

    A cache hit is served above it and takes no permit: a busy client's known answers do not
    queue behind its running calls. A call that queued here is marked (`Call.queued`) so the
    cache is looked at again below: it may hold the answer now, and twenty identical calls from
    one client must not make a second provider request for the twelve that queued. It must be
    above `ShareIdenticalCalls`: below it the execution is shared by identical callers of
    possibly different clients and belongs to none of them. The plan (`RunTool`, above) is made
    before the permit is taken: planning is local and bounded.
    """

    def __init__(self, limits: ClientLimits) -> None:
        self.limits = limits

    async def __call__(self, call: Call, call_next: Next) -> object:
        async with self.limits.hold(call) as queued:
            return await call_next(call.replace(queued=True) if queued else call)
