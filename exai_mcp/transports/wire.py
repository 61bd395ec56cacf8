"""Lines in and out over the claimed stdin and stdout: by the event loop where it can poll
them, by a worker thread where it cannot.

MCP clients run a stdio server on pipes (Node's clients: socket pairs). Those the event loop
reads and writes itself, with no worker-thread hop for each line read and each reply written
as the SDK's stdio transport makes: on a 2-core machine those two hops were a third of the
server's CPU time for a cache hit (1.3 ms a hit before, 0.85 ms after). Anything else (a regular file, as in `exai-mcp < calls.jsonl`, a terminal, a
Windows handle) keeps the thread: asyncio cannot poll a regular file, and a terminal left
non-blocking breaks the shell it belongs to.

Lines are bytes, split on b"\\n" only, and at most `cap` bytes: a longer line is reported
once (`TOO_LONG`) and read past in pieces, never held whole.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO, Final, Protocol

import anyio

log = logging.getLogger("exai_mcp.stdio")

TOO_LONG: Final = b"\0too long\0"
"""What `readline` returns for a line over its cap; compare with `is` (a line read from the
wire is always a new object)."""

CHUNK = 1 << 16  # bytes read at a time; the loop reader also buffers at most twice this


class LineReader(Protocol):
    async def readline(self) -> bytes:
        """The next line with its b"\\n" (the last one may lack it), TOO_LONG, or b"" at end."""
        ...


class LineWriter(Protocol):
    async def write(self, data: bytes) -> None:
        """Write `data` whole, waiting while the reader is behind; raises once it is gone."""
        ...


@asynccontextmanager
async def lines(wire_in: BinaryIO, wire_out: BinaryIO, cap: int) -> AsyncIterator[Wire]:
    """A reader of `wire_in` and a writer to `wire_out`, each on the loop where it can be.

    When both are one socket (socat's `EXEC:`, inetd), threads serve both: the loop's write
    transport takes a readable socket for one its peer has closed, so the client's next
    request would end the session, and a socket the loop reads is non-blocking for a thread
    writing it too.
    """
    shared = _same_file(wire_in, wire_out)
    async with (
        _line_reader(wire_in, cap, loop=None if shared else _pollable_loop(wire_in)) as reader,
        _line_writer(wire_out, loop=None if shared else _pollable_loop(wire_out)) as writer,
    ):
        yield Wire(reader, writer)


@dataclass(frozen=True, slots=True)
class Wire:
    reader: LineReader
    writer: LineWriter


@asynccontextmanager
async def _line_reader(
    wire: BinaryIO, cap: int, *, loop: asyncio.AbstractEventLoop | None
) -> AsyncIterator[LineReader]:
    if loop is None:
        yield _ThreadReader(wire, cap)
        return
    fd = wire.fileno()
    reader = asyncio.StreamReader(limit=CHUNK, loop=loop)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), _unowned(fd, "rb")
    )
    try:
        yield _LoopReader(reader, cap)
    finally:
        transport.close()
        _restore_blocking(fd)


@asynccontextmanager
async def _line_writer(
    wire: BinaryIO, *, loop: asyncio.AbstractEventLoop | None
) -> AsyncIterator[LineWriter]:
    if loop is None:
        yield _ThreadWriter(wire)
        return
    fd = wire.fileno()
    transport, protocol = await loop.connect_write_pipe(
        lambda: _FlowControl(loop), _unowned(fd, "wb")
    )
    # A write returns once the pipe has taken all of it, as a flush does: a reply is not
    # left in a buffer that exit would drop, and the writer holds one reply at a time.
    transport.set_write_buffer_limits(high=0)
    try:
        yield _LoopWriter(transport, protocol)
    finally:
        if transport.get_write_buffer_size():
            # A reply cut short by cancellation: drop its rest. Closing would keep a callback
            # writing it, which blocks the whole loop once the descriptor is blocking again.
            transport.abort()
        else:
            transport.close()
        _restore_blocking(fd)


def _pollable_loop(wire: BinaryIO) -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop when it can poll `wire` (a pipe or socket on POSIX), else None."""
    if sys.platform == "win32":
        return None
    try:
        loop = asyncio.get_running_loop()
        mode = os.fstat(wire.fileno()).st_mode
    except (AttributeError, OSError, RuntimeError, ValueError):
        return None
    return loop if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def _same_file(one: BinaryIO, other: BinaryIO) -> bool:
    try:
        a, b = os.fstat(one.fileno()), os.fstat(other.fileno())
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
            return False
        # macOS gives every socket inode 0, so two socket pairs (Node's) look like one.
        return a.st_ino != 0 or _one_open_file(one.fileno(), other.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _one_open_file(fd: int, other: int) -> bool:
    """Whether `fd` and `other` share one open file (a socket shared by dup, fork or fd
    passing): the blocking flag belongs to the open file, so flipping it on one shows on
    the other. Flipped back at once."""
    before, was = os.get_blocking(other), os.get_blocking(fd)
    os.set_blocking(fd, not was)
    try:
        return os.get_blocking(other) != before
    finally:
        os.set_blocking(fd, was)


def _unowned(fd: int, mode: str) -> BinaryIO:
    """A file object over `fd` that the pipe transport may close without closing `fd`."""
    return open(fd, mode, buffering=0, closefd=False)  # the pipe transport closes it


def _reset() -> None:
    log.info("the client reset its connection: taken as the end of its input")


def _restore_blocking(fd: int) -> None:
    """The pipe transport made `fd` non-blocking; whoever shares it after us expects blocking."""
    with suppress(OSError):
        os.set_blocking(fd, True)


class _LoopReader:
    def __init__(self, reader: asyncio.StreamReader, cap: int) -> None:
        self._reader = reader
        self._cap = cap
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer known to hold no newline
        self._skipping = False  # inside a line already reported as TOO_LONG

    async def readline(self) -> bytes:
        while True:
            newline = self._buffer.find(b"\n", self._searched)
            if newline >= 0:
                skipped, self._skipping = self._skipping, False
                line = TOO_LONG if newline > self._cap else bytes(self._buffer[: newline + 1])
                del self._buffer[: newline + 1]
                self._searched = 0
                if skipped:  # the tail of a line already reported
                    continue
                return line
            if self._skipping:
                self._buffer.clear()
            elif len(self._buffer) > self._cap:
                self._buffer.clear()
                self._skipping = True
                return TOO_LONG
            self._searched = len(self._buffer)
            try:
                chunk = await self._reader.read(CHUNK)
            except ConnectionError:  # a socket reset by a client that left
                _reset()
                self._buffer.clear()  # a line it cut short is not a message
                self._searched = 0
                return b""
            if not chunk:  # end of input: what is left is the last line, unless skipped
                line = b"" if self._skipping else bytes(self._buffer)
                self._buffer.clear()
                self._searched = 0
                return line
            self._buffer += chunk


class _ThreadReader:
    def __init__(self, wire: BinaryIO, cap: int) -> None:
        self._wire = wire
        self._cap = cap

    async def readline(self) -> bytes:
        try:
            line = await anyio.to_thread.run_sync(self._wire.readline, self._cap + 1)
            if len(line) <= self._cap or line.endswith(b"\n"):
                return line
            await anyio.to_thread.run_sync(self._skip_rest_of_line)
        except ConnectionError:  # a socket reset by a client that left
            _reset()
            return b""
        return TOO_LONG

    def _skip_rest_of_line(self) -> None:
        while piece := self._wire.readline(CHUNK):
            if piece.endswith(b"\n"):
                return


class _FlowControl(asyncio.Protocol):
    """The write pipe's flow control: `drain` waits while the pipe's buffer is full."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._resumed: asyncio.Future[None] | None = None
        self.lost: BaseException | None = None

    def pause_writing(self) -> None:
        self._resumed = self._loop.create_future()

    def resume_writing(self) -> None:
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or BrokenPipeError("the client closed its end of stdout")
        self._wake()

    def _wake(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None

    async def drain(self) -> None:
        if self._resumed is not None:
            await asyncio.shield(self._resumed)
        if self.lost is not None:
            raise self.lost


class _LoopWriter:
    def __init__(self, transport: asyncio.WriteTransport, protocol: _FlowControl) -> None:
        self._transport = transport
        self._protocol = protocol

    async def write(self, data: bytes) -> None:
        if self._protocol.lost is not None:
            raise self._protocol.lost
        self._transport.write(data)  # written now when the pipe has room, else buffered
        if self._transport.is_closing():  # it failed: the loss is reported on the next turn
            await asyncio.sleep(0)
        await self._protocol.drain()


class _ThreadWriter:
    def __init__(self, wire: BinaryIO) -> None:
        self._wire = wire

    async def write(self, data: bytes) -> None:
        # One worker-thread hop for the write and its flush, not one each.
        await anyio.to_thread.run_sync(self._write_and_flush, data)

    def _write_and_flush(self, data: bytes) -> None:
        self._wire.write(data)
        self._wire.flush()


__all__ = ["TOO_LONG", "LineReader", "LineWriter", "Wire", "lines"]
