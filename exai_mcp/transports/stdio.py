"""The stdio adapter: one MCP session over the process's stdin and stdout.

    anyio.run(serve_stdio, settings)

It does what the SDK's `mcp.server.stdio.stdio_server` does (one JSON-RPC message per line,
UTF-8; fd 0 and fd 1 moved out of reach of stray prints and child processes while serving)
and three things that it does not:

- every line that is not a message gets the JSON-RPC error it is owed (`jsonrpc.read_line`),
  where the SDK drops it and leaves its caller waiting;
- intake is bounded (`intake.SessionIntake`, EXAI_SESSION_MAX_PENDING): calls beyond the cap
  are refused at once, and while too many replies are unwritten, because the client is not
  reading them, the reader stops reading stdin. The pipe then fills and the client's writes
  block: back-pressure, instead of a task and an answer held in memory for every line read;
- pipes and sockets (how clients run a stdio server) are read and written by the event loop
  itself (`wire`), not by a worker thread per line.

One reader task turns lines into messages for the server (or into replies of its own), one
writer task writes every reply in the order handed to it, and counts it as delivered as it
takes it: a reply stays counted while it waits for the writer, and the writer holds one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO, TextIO

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCRequest

from exai_mcp.config import Settings
from exai_mcp.observability.endpoint import metrics_beside
from exai_mcp.server import build_server
from exai_mcp.store.threads import ThreadStore
from exai_mcp.transports.intake import SessionIntake
from exai_mcp.transports.jsonrpc import Rejected, read_line, too_long
from exai_mcp.transports.wire import TOO_LONG, LineReader, LineWriter, lines

log = logging.getLogger("exai_mcp.stdio")


async def serve_stdio(settings: Settings, store: ThreadStore | None = None) -> None:
    """Serve one session on stdin/stdout until the client closes stdin.

    `store`: the thread store the caller opened (and will close); without it, the server
    opens the one the settings name.
    """
    server = build_server(settings, store)
    intake = SessionIntake(settings.session_max_pending)
    async with (
        metrics_beside(server, settings.metrics_port),
        stdio_session(intake) as (read_stream, write_stream),
    ):
        await server.run(read_stream, write_stream, server.create_initialization_options())


@asynccontextmanager
async def stdio_session(
    intake: SessionIntake,
) -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """The (read, write) streams `Server.run` takes, served over the claimed stdin/stdout."""
    with (
        _claimed(0, sys.stdin, "rb", _null_input) as wire_in,
        _claimed(1, sys.stdout, "wb", _stderr_or_null) as wire_out,
    ):
        to_server, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception]()
        write_stream, to_client = anyio.create_memory_object_stream[SessionMessage]()
        own_replies = write_stream.clone()  # the reader's own errors and refusals

        async def read_stdin(stdin: LineReader) -> None:
            async with to_server, own_replies:
                while line := await stdin.readline():
                    if line is TOO_LONG:
                        log.warning("answered a message over %d bytes", MAX_LINE_BYTES)
                        for reply in too_long(MAX_LINE_BYTES).replies:
                            await own_replies.send(_OwnReply(reply))
                        continue
                    message = read_line(line.decode("utf-8", errors="replace"))
                    if isinstance(message, Rejected):
                        if message.replies:
                            log.warning("answered a malformed message: %s", message.reason)
                        for reply in message.replies:
                            await own_replies.send(_OwnReply(reply))
                        continue
                    if not isinstance(message, JSONRPCRequest):
                        await to_server.send(SessionMessage(message))
                        continue
                    await intake.wait_for_room()
                    busy = intake.refusal(message)
                    if busy is not None:
                        await own_replies.send(_OwnReply(busy))
                        continue
                    await to_server.send(SessionMessage(message, metadata=intake.admit(message)))

        async def write_stdout(stdout: LineWriter, session: anyio.CancelScope) -> None:
            async with to_client:
                async for session_message in to_client:
                    message = session_message.message
                    if not isinstance(session_message, _OwnReply):
                        # Counted before the write: the client may read this reply and send
                        # its next call before this task runs again, and must find room.
                        intake.delivering(message)
                    line = message.model_dump_json(by_alias=True, exclude_unset=True)
                    try:
                        await stdout.write(line.encode("utf-8") + b"\n")
                    except ConnectionError:
                        # The client stopped listening: the session is over, as at the end of
                        # its input. Its calls still running are cancelled (no one would read
                        # them), and the server exits instead of lingering with the client.
                        log.info("the client closed its end of stdout; ending the session")
                        session.cancel()
                        return

        async with (
            lines(wire_in, wire_out, MAX_LINE_BYTES) as wire,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(read_stdin, wire.reader)
            tg.start_soon(write_stdout, wire.writer, tg.cancel_scope)
            yield read_stream, write_stream


MAX_LINE_BYTES = 16 << 20
"""The longest message read (one line): a client bug or a flood past it is answered with an
error, and read past in pieces, not held whole (the HTTP transport caps bodies likewise)."""


@dataclass
class _OwnReply(SessionMessage):
    """A reply the transport writes itself (an error, a refusal): it frees no counted request,
    even when a client reuses the id of one still in flight."""


@contextmanager
def _claimed(
    fd: int, stream: TextIO, mode: str, open_diversion: Callable[[], int]
) -> Iterator[BinaryIO]:
    """The wire behind standard stream `fd`, read or written through a private duplicate while
    `fd` itself points elsewhere (the null device for stdin, stderr for stdout).

    Restored on exit. Where descriptors cannot be moved (no real fd behind the stream, or an
    OS error) the stream's own buffer is served in place, as the SDK does. The duplicate is
    never closed: a worker thread may still be blocked on it when the transport exits
    (when `wire` serves it by thread).
    """
    try:
        if stream.buffer.fileno() != fd:
            raise OSError(f"sys stream is not fd {fd}")
        private = os.dup(fd)  # above 2 (0-2 are open) and not inherited by child processes
    except (AttributeError, OSError, ValueError):
        yield stream.buffer
        return
    try:
        diversion = open_diversion()
        try:
            os.dup2(diversion, fd)
        finally:
            os.close(diversion)
    except OSError:
        os.close(private)
        yield stream.buffer
        return
    try:
        yield os.fdopen(private, mode, closefd=False)
    finally:
        with suppress(OSError):
            os.dup2(private, fd)


def _null_input() -> int:
    return os.open(os.devnull, os.O_RDONLY)


def _stderr_or_null() -> int:
    try:
        return os.dup(2)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)


__all__ = ["serve_stdio", "stdio_session"]
