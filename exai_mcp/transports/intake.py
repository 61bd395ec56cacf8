"""How much one session may leave unanswered: EXAI_SESSION_MAX_PENDING.

    intake = SessionIntake(max_pending=64)
    await intake.wait_for_room()              # before handing on a request: back-pressure
    busy = intake.refusal(request)            # a busy reply to write instead, or None
    metadata = intake.admit(request)          # counted until the writer takes its reply
    intake.delivering(message)                # by the writer, as it takes a reply to write

A request is unanswered from the moment the transport hands it to the server until the writer
takes its reply, not merely until the reply is computed: replies wait for the writer in their
handlers' tasks, and the writer takes the next one only when the previous one is written. So a
client that stops reading its replies keeps them unanswered (all but the one being written),
and answers that cannot be delivered cannot pile up. Guarantees:

- at most `max_pending` admitted calls (`tools/call`) are unanswered; the next one is refused
  at once with an `isError` result that names EXAI_SESSION_MAX_PENDING, and never runs;
- other requests (tools/list, ping...) are never refused, but once twice `max_pending`
  requests are unanswered `wait_for_room` holds the transport's reader: it stops reading its
  input until replies are written, so the client's writes block instead of our memory growing;
- a request the client cancelled is settled by the dispatcher with no reply; its slot is
  freed then (the SDK's `on_request_unanswered` hook), so every slot is freed exactly once.

Counted by request id, so a reply frees the slot of the request it answers, whatever the order.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import anyio
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    CallToolResult,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    TextContent,
)

from exai_mcp.errors import BusyError, user_message

log = logging.getLogger("exai_mcp.intake")

CAPPED_METHOD = "tools/call"
WARN_EVERY = 60.0  # seconds between log warnings about refused calls, however many there are


class SessionIntake:
    """The unanswered requests of one session, bounded; see the module docstring."""

    __slots__ = (
        "_by_id",
        "_room",
        "_warned_at",
        "max_pending",
        "refused",
        "room_limit",
        "unanswered",
    )

    def __init__(self, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.room_limit = 2 * max_pending  # room for cheap requests while calls fill the cap
        self.unanswered = 0
        self.refused = 0
        self._by_id: Counter[RequestId] = Counter()
        self._warned_at: float | None = None
        self._room: anyio.Event | None = None  # the reader's, while it waits for room

    async def wait_for_room(self) -> None:
        """Return once another request may be handed on; until then the reader reads nothing."""
        while self.unanswered >= self.room_limit:
            self._room = anyio.Event()
            await self._room.wait()  # set when a reply is taken, or a request settles without one

    def refusal(self, request: JSONRPCRequest) -> JSONRPCResponse | None:
        """The busy reply for a call over the cap, or None when the request may go ahead."""
        if request.method != CAPPED_METHOD or self.unanswered < self.max_pending:
            return None
        self.refused += 1
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "refusing calls: the session has %d requests without a reply "
                "(EXAI_SESSION_MAX_PENDING=%d); %d refused so far",
                self.unanswered,
                self.max_pending,
                self.refused,
            )
        return busy_reply(request.id, self.max_pending)

    def admit(self, request: JSONRPCRequest) -> ServerMessageMetadata:
        """Count `request` until the writer takes its reply; the metadata frees it if none
        ever comes (the client cancelled it)."""
        self._by_id[request.id] += 1
        self.unanswered += 1

        async def settled_without_reply() -> None:
            self._release(request.id)

        return ServerMessageMetadata(on_request_unanswered=settled_without_reply)

    def delivering(self, message: JSONRPCMessage) -> None:
        """The writer took `message`; if it answers a counted request, that slot is free."""
        if isinstance(message, JSONRPCResponse | JSONRPCError) and message.id is not None:
            self._release(message.id)

    def _release(self, request_id: RequestId) -> None:
        if request_id not in self._by_id:
            return  # never counted, or already freed: a slot is freed once
        self._by_id[request_id] -= 1
        if not self._by_id[request_id]:
            del self._by_id[request_id]
        self.unanswered -= 1
        if self._room is not None:
            self._room.set()


def busy_reply(request_id: RequestId, max_pending: int) -> JSONRPCResponse:
    """The `tools/call` result for a call refused because too many await their replies."""
    message = user_message(
        BusyError(
            f"exai-mcp is busy: this session already has {max_pending} "
            f"{'call' if max_pending == 1 else 'calls'} without a reply "
            f"(EXAI_SESSION_MAX_PENDING={max_pending}). Wait for the replies to earlier calls, "
            "then send this call again."
        )
    )
    result = CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
    return JSONRPCResponse(
        jsonrpc="2.0",
        id=request_id,
        result=result.model_dump(by_alias=True, mode="json", exclude_none=True),
    )
