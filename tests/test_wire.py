"""The stdio wire (transports/wire.py): lines in and out, by the event loop for pipes and
sockets (how MCP clients run a server), by a worker thread for anything else.

What users rely on: every line arrives whole and in order whichever way it is served, a line
over the cap is answered once and read past, a reply is written whole before the next one
(nothing is left in a buffer that exit would drop), a client that is gone is noticed, the
descriptors are left as blocking as they were found, and a pipe or socket costs no worker
thread per line (the two hops were a third of the server's CPU time for a cache hit).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import pytest
from fake_provider import FakeProvider
from mcp_types import INVALID_REQUEST, PARSE_ERROR

from exai_mcp.transports import wire as wire_module
from exai_mcp.transports.wire import CHUNK, TOO_LONG, lines
from tests.conftest import RAW_REPLY_WAIT, message, provider_env, stdio_params

WAIT = 10.0  # every wait in these tests is bounded by this
CAP = 1_000
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)  # Linux
KINDS = ["pipe", "socket", "file"]
EXPECTED = [
    b'{"a":1}\n',
    b"x" * CAP + b"\n",  # exactly the cap: read
    TOO_LONG,  # one byte over
    TOO_LONG,  # five chunks over, never held whole
    b'{"crlf":true}\r\n',
    b'{"after":"the long ones"}\n',
    b'{"last":"no newline"}',
]
INPUT = b"".join(
    [
        EXPECTED[0],
        EXPECTED[1],
        b"y" * (CAP + 1) + b"\n",
        b"z" * (5 * CHUNK) + b"\n",
        *EXPECTED[4:],
    ]
)


@contextmanager
def wire_in(kind: str, tmp_path: Path, data: bytes = b"") -> Iterator[BinaryIO]:
    """What the server reads: `data` from a file, or arriving in uneven pieces."""
    if kind == "file":
        path = tmp_path / "input.jsonl"
        path.write_bytes(data)
        with open(path, "rb") as wire:
            yield wire
        return
    read_fd, write_fd = connected(kind)

    def feed() -> None:
        with open(write_fd, "wb", buffering=0) as client:
            for start in range(0, len(data), 7_919):  # pieces that split lines anywhere
                client.write(data[start : start + 7_919])

    feeder = threading.Thread(target=feed, daemon=True)
    with open(read_fd, "rb") as wire:
        feeder.start()
        yield wire
    feeder.join(WAIT)


@contextmanager
def wire_out(kind: str) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """(what the server writes, the client's end)."""
    read_fd, write_fd = connected(kind)
    with open(write_fd, "wb") as wire, open(read_fd, "rb") as client:
        yield wire, client


def connected(kind: str) -> tuple[int, int]:
    """(read end, write end) of a pipe or a socket pair."""
    if kind == "pipe":
        return os.pipe()
    one, other = socket.socketpair()
    return one.detach(), other.detach()


def read_exactly(client: BinaryIO, size: int) -> bytes:
    parts, got = [], 0
    while got < size and (piece := client.read(min(1 << 16, size - got))):
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def no_worker_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a worker thread was used for a pipe or socket")

    monkeypatch.setattr(wire_module.anyio.to_thread, "run_sync", refuse)


@pytest.mark.parametrize("kind", KINDS)
async def test_lines_arrive_whole_and_an_over_long_one_is_reported_once(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = []
    with wire_in(kind, tmp_path, INPUT) as server_in, wire_out("pipe") as (server_out, _):
        if kind != "file":
            no_worker_threads(monkeypatch)
        async with lines(server_in, server_out, CAP) as wire:
            with anyio.fail_after(WAIT):
                while line := await wire.reader.readline():
                    got.append(line)
    assert got == EXPECTED


@pytest.mark.parametrize("kind", ["pipe", "socket"])
async def test_a_write_returns_once_the_client_took_it_all_and_nothing_is_lost(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_worker_threads(monkeypatch)
    with wire_in("pipe", tmp_path) as server_in, wire_out(kind) as (server_out, client):
        # The first reply overfills the wire by a little: a write that counted what is
        # buffered in this process as written (then lost at exit) returns early here.
        room = fcntl.fcntl(server_out, F_GETPIPE_SZ) if kind == "pipe" else 4 << 20
        replies = [b"1" * (room + 1_000) + b"\n", b"2" * 300_000 + b"\n", b"3\n"]
        async with lines(server_in, server_out, CAP) as wire:
            writing = asyncio.ensure_future(wire.writer.write(replies[0]))
            await asyncio.sleep(0.3)  # a window for a write taken as done too early
            assert not writing.done(), "a reply the client has not read counted as written"
            reading = asyncio.ensure_future(
                asyncio.to_thread(read_exactly, client, sum(map(len, replies)))
            )
            with anyio.fail_after(WAIT):
                await writing
                for reply in replies[1:]:
                    await wire.writer.write(reply)
                received = await reading
    assert received == b"".join(replies)


@contextmanager
def gone_client(kind: str, tmp_path: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """(server in, server out) where the client has closed its end of the server's output.
    "one socket": both are one socket, which threads serve."""
    if kind == "one socket":
        ours, theirs = socket.socketpair()
        theirs.shutdown(socket.SHUT_RD)  # it reads no more replies
        with ours.makefile("rb") as server_in, ours.makefile("wb") as server_out:
            yield server_in, server_out
        ours.close()
        theirs.close()
        return
    with wire_in(kind, tmp_path) as server_in, wire_out(kind) as (server_out, client):
        client.close()
        yield server_in, server_out


@pytest.mark.parametrize("kind", ["pipe", "socket", "one socket"])
async def test_a_client_that_is_gone_is_noticed_on_the_next_write(
    kind: str, tmp_path: Path
) -> None:
    with gone_client(kind, tmp_path) as (server_in, server_out):
        async with lines(server_in, server_out, CAP) as wire:
            with anyio.fail_after(WAIT), pytest.raises(ConnectionError):
                await wire.writer.write(b'{"id":1}\n' * 50_000)


def read_for(client: BinaryIO, seconds: float) -> int:
    """Bytes that arrive on `client` within `seconds` (it is read without blocking)."""
    os.set_blocking(client.fileno(), False)
    got, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got += len(os.read(client.fileno(), 1 << 16))
        except BlockingIOError:
            time.sleep(0.01)
    return got


async def test_a_reply_cut_short_by_cancellation_is_not_finished_after_the_session(
    tmp_path: Path,
) -> None:
    # Finishing it would write from a callback on a descriptor blocking again by then: the
    # whole event loop would stop until the client read it all.
    with wire_in("pipe", tmp_path) as server_in, wire_out("pipe") as (server_out, client):
        room = fcntl.fcntl(server_out, F_GETPIPE_SZ)
        async with lines(server_in, server_out, CAP) as wire:
            writing = asyncio.ensure_future(wire.writer.write(b"x" * (4 * room) + b"\n"))
            await asyncio.sleep(0.2)  # the pipe is full, the rest waits in the transport
            writing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await writing
        reading = asyncio.ensure_future(asyncio.to_thread(read_for, client, 1.0))
        await asyncio.sleep(0.5)  # the loop runs while the client reads
        assert await reading == room  # what the pipe held, and nothing after


@pytest.mark.parametrize("kind", ["socket", "one socket"])
async def test_a_connection_reset_by_the_client_is_the_end_of_input(
    kind: str, tmp_path: Path
) -> None:
    ours, theirs = socket.socketpair()
    with ours.makefile("rb") as server_in, contextlib.ExitStack() as stack:
        if kind == "one socket":
            server_out = stack.enter_context(ours.makefile("wb"))
        else:
            server_out, _ = stack.enter_context(wire_out("pipe"))
        ours.sendall(b'{"reply":"never read"}\n')
        theirs.sendall(b'{"jsonrpc":"2.0","id":1,"method":"tools/li')  # cut short by...
        theirs.close()  # ...a close with a reply unread: a reset, not an end of file
        async with lines(server_in, server_out, CAP) as wire:
            with anyio.fail_after(WAIT):
                assert await wire.reader.readline() == b""
    ours.close()


async def test_two_socket_pairs_are_told_apart_where_sockets_have_no_inode_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # macOS reports inode 0 for every socket: Node's two socket pairs, one for stdin and one
    # for stdout, must not be taken for one socket (and served by threads).
    real_fstat = os.fstat

    def fstat_as_on_macos(fd: int) -> os.stat_result:
        found = real_fstat(fd)
        if not stat.S_ISSOCK(found.st_mode):
            return found
        return os.stat_result((found.st_mode, 0, 0, *tuple(found)[3:10]))

    monkeypatch.setattr(os, "fstat", fstat_as_on_macos)
    no_worker_threads(monkeypatch)
    with wire_in("socket", tmp_path, b"{}\n") as server_in, wire_out("socket") as (server_out, _):
        blocking = os.get_blocking(server_in.fileno()), os.get_blocking(server_out.fileno())
        async with lines(server_in, server_out, CAP) as wire:
            assert await wire.reader.readline() == b"{}\n"
            await wire.writer.write(b"{}\n")
        assert (
            os.get_blocking(server_in.fileno()),
            os.get_blocking(server_out.fileno()),
        ) == blocking


@pytest.mark.parametrize("kind", ["pipe", "socket"])
async def test_descriptors_are_left_blocking_as_they_were_found(kind: str, tmp_path: Path) -> None:
    with wire_in(kind, tmp_path, b"{}\n") as server_in, wire_out(kind) as (server_out, _):
        async with lines(server_in, server_out, CAP) as wire:
            assert await wire.reader.readline() == b"{}\n"
            await wire.writer.write(b"{}\n")
        # Whoever else holds these (a wrapper script, the shell) reads and writes blocking.
        assert os.get_blocking(server_in.fileno()) and os.get_blocking(server_out.fileno())


INITIALIZE = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "raw", "version": "0"},
}
SESSION = b"".join(
    [
        message(0, "initialize", INITIALIZE),
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
        message(1, "tools/list", {}),
    ]
)


def spawning(fake: FakeProvider, tmp_path: Path) -> dict[str, Any]:
    """`subprocess` arguments for `python -m exai_mcp`, less its stdin and stdout."""
    return {
        "args": [sys.executable, "-m", "exai_mcp"],
        "stderr": subprocess.DEVNULL,
        "env": {**stdio_params(provider_env(fake, tmp_path)).env, "EXAI_LOG_LEVEL": "WARNING"},
        "cwd": tmp_path,
    }


def test_a_server_on_one_socket_for_stdin_and_stdout_answers(
    fake: FakeProvider, tmp_path: Path
) -> None:
    # socat's EXEC: and inetd hand a server one socket as both: the loop's write side would
    # take the client's next request for the socket closing.
    client, server_end = socket.socketpair()
    server = subprocess.Popen(stdin=server_end, stdout=server_end, **spawning(fake, tmp_path))
    server_end.close()
    try:
        client.settimeout(RAW_REPLY_WAIT)
        replies = client.makefile("rb")
        client.sendall(SESSION)
        first, second = json.loads(replies.readline()), json.loads(replies.readline())
        assert first["id"] == 0 and "result" in first
        assert second["id"] == 1 and any(t["name"] == "analyze" for t in second["result"]["tools"])
        client.sendall(message(2, "tools/list", {}))  # a request once the server sat idle
        assert json.loads(replies.readline())["id"] == 2
        client.shutdown(socket.SHUT_WR)  # end of input: the server exits
        assert server.wait(RAW_REPLY_WAIT) == 0
    finally:
        client.close()
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_server_reading_a_file_answers_every_line_and_exits(
    fake: FakeProvider, tmp_path: Path
) -> None:
    # `exai-mcp < lines.jsonl > replies.jsonl`: files are read and written by thread. The
    # lines are ones the transport answers itself, so none races the end of input (a call
    # still running when input ends is cancelled: its client has gone).
    lines_in, replies = tmp_path / "lines.jsonl", tmp_path / "replies.jsonl"
    lines_in.write_bytes(b'not json\n{"jsonrpc":"2.0","id":7,"method":"x","params":[1]}\n')
    with lines_in.open("rb") as stdin, replies.open("wb") as stdout:
        done = subprocess.run(
            stdin=stdin, stdout=stdout, timeout=RAW_REPLY_WAIT * 2, **spawning(fake, tmp_path)
        )
    assert done.returncode == 0
    answered = [json.loads(line) for line in replies.read_bytes().splitlines()]
    assert [(reply["id"], reply["error"]["code"]) for reply in answered] == [
        (None, PARSE_ERROR),
        (7, INVALID_REQUEST),
    ]


def test_a_client_that_stops_listening_ends_the_session_and_the_server_exits(
    fake: FakeProvider, tmp_path: Path
) -> None:
    # The client closes its end of the server's stdout but keeps stdin open: the server must
    # neither linger (holding its provider connections) nor die with a traceback.
    spawn = spawning(fake, tmp_path)
    spawn["env"]["EXAI_LOG_LEVEL"] = "INFO"
    spawn["stderr"] = subprocess.PIPE
    server = subprocess.Popen(stdin=subprocess.PIPE, stdout=subprocess.PIPE, **spawn)
    assert server.stdin is not None and server.stdout is not None and server.stderr is not None
    try:
        server.stdin.write(message(0, "initialize", INITIALIZE))
        server.stdin.flush()
        assert json.loads(server.stdout.readline())["id"] == 0
        server.stdout.close()
        server.stdin.write(SESSION.split(b"\n", 1)[1])  # initialized, then a tools/list
        server.stdin.flush()
        assert server.wait(RAW_REPLY_WAIT) == 0
        log = server.stderr.read().decode()
        assert "Traceback" not in log
        assert "the client closed its end of stdout" in log
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdin.close()
        server.stderr.close()
