"""Fake OpenAI-compatible chat provider for exai-mcp tests, demos and benchmarks.

A tiny stdlib-only HTTP/1.1 server (asyncio streams + json) on 127.0.0.1 that answers
``POST <prefix>/chat/completions`` (JSON or SSE streaming) and ``GET <prefix>/models`` like
Moonshot (Kimi, ``/v1``) and Zhipu (GLM, ``/api/paas/v4``) do, so the real ``openai`` SDK
can be exercised over real HTTP without network access or API keys. Its controls (scripted
replies, a hold/release gate, awaitable counters) make tests deterministic without sleeps.

Usage::

    async with FakeProvider(latency=0.0) as fake:
        client = openai.AsyncOpenAI(api_key="test", base_url=fake.base_url("/v1"))
        fake.enqueue(Reply(status=429, retry_after=1))
        r = await client.chat.completions.create(model="kimi-k2", messages=msgs)
        assert fake.chat_count == 2

Streamed answers use HTTP/1.1 keep-alive (chunked transfer encoding), as real providers do,
so a client reuses its connection; ``keep_alive=False`` (``--close-streams``) restores the old
behaviour of closing every streamed connection, to exercise reconnects. ``connections``
counts the TCP connections accepted.

As a subprocess: ``python scripts/fake_provider.py [--port 0] [--latency 0.5] [--answer TEXT]``
prints one line ``http://127.0.0.1:PORT`` to stdout once listening and runs until
SIGTERM/SIGINT, or until its stdin (when it is a pipe or a terminal) reaches EOF.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeProvider", "RecordedRequest", "Reply"]

DEFAULT_MODELS = ("kimi-k2-0905-preview", "glm-4.6")
DEFAULT_WAIT_TIMEOUT = 5.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "not_found"),
    408: ("timeout_error", "timeout"),
    409: ("conflict_error", "conflict"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "overloaded"),
}

_MAX_BODY = 64 * 1024 * 1024


@dataclass
class Reply:
    """A scripted answer for one chat request (see ``FakeProvider.enqueue``)."""

    status: int = 200
    text: str | None = None
    retry_after: float | None = None
    hang: bool = False
    delay: float | None = None
    error_message: str | None = None
    malformed: bool = False
    """Answer 200 with a body that is not what the API promises (garbled SSE or JSON)."""
    malformed_body: bytes | None = None
    """With `malformed`, this exact body instead of the default garble."""
    content_type: str | None = None
    """With `malformed`, this content type instead of the one the API promises."""
    cut_after: int | None = None
    """Stream this many answer chunks, then drop the connection without finishing."""


@dataclass
class RecordedRequest:
    """One HTTP request as seen by the fake (headers have lower-case keys)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    time: float = field(default_factory=time.monotonic)


class _Disconnected(Exception):
    """The client closed the connection before the answer was complete."""


class FakeProvider:
    """In-process fake OpenAI-compatible provider; use as an async context manager."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        answer: str | None = None,
        models: tuple[str, ...] | list[str] = DEFAULT_MODELS,
        require_key: str | None = None,
        fail_rate: float = 0.0,
        seed: int | None = 0,
        port: int = 0,
        keep_alive: bool = True,
    ) -> None:
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.answer = answer
        # Streamed as `reasoning_content` deltas before the answer, as thinking models
        # (kimi-thinking, GLM-4.5+ with thinking on) do; never part of `content`.
        self.reasoning: str | None = None
        self.models = list(models)
        self.require_key = require_key
        self.fail_rate = fail_rate
        self.keep_alive = keep_alive
        """Streamed answers keep their connection open (chunked); False closes each one."""
        self._seed = seed
        self._rng = random.Random(seed)
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._queue: deque[Reply] = deque()
        self._gate: asyncio.Event | None = None
        self._held = False
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.chat_count = 0
        self.active = 0
        self.max_active = 0
        self.disconnects = 0
        self.connections = 0

    # ---------------------------------------------------------------- lifecycle

    @property
    def seed(self) -> int | None:
        """Seed of the random generator used by ``fail_rate``; setting it reseeds."""
        return self._seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        self._seed = value
        self._rng = random.Random(value)

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def base_url(self, prefix: str = "/v1") -> str:
        """Base URL for an SDK client, e.g. ``base_url("/api/paas/v4")`` for GLM."""
        prefix = prefix.strip("/")
        return f"{self.url}/{prefix}" if prefix else self.url

    async def start(self) -> FakeProvider:
        """Start listening on 127.0.0.1 (ephemeral port unless ``port`` was given)."""
        if self._server is not None:
            return self
        self._gate = asyncio.Event()
        if not self._held:
            self._gate.set()
        self._server = await asyncio.start_server(
            self._handle_connection, "127.0.0.1", self._requested_port, limit=1024 * 1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and cancel every connection task."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._conn_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._conn_tasks.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)

    async def __aenter__(self) -> FakeProvider:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- controls

    def enqueue(self, *replies: Reply) -> None:
        """Script replies consumed FIFO by the next chat requests (then the default answer)."""
        self._queue.extend(replies)

    @property
    def pending_replies(self) -> int:
        """Number of scripted replies not yet consumed."""
        return len(self._queue)

    def hold(self) -> None:
        """Make every chat request wait (counted as active) until ``release()``."""
        self._held = True
        if self._gate is not None:
            self._gate.clear()

    def release(self) -> None:
        """Let held (and future) chat requests proceed."""
        self._held = False
        if self._gate is not None:
            self._gate.set()

    def reset(self) -> None:
        """Clear observations and scripted replies (settings such as latency are kept)."""
        self.requests.clear()
        self._queue.clear()
        self.chat_count = 0
        self.max_active = self.active
        self.disconnects = 0
        self.connections = 0
        self._rng = random.Random(self._seed)
        self._changed()

    # ---------------------------------------------------------------- observation

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Recorded chat-completion requests only."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    async def wait_for_requests(self, n: int, timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        """Wait until at least ``n`` chat requests were received in total."""
        await self._wait_until(lambda: self.chat_count >= n, timeout, f"{n} chat requests")

    async def wait_for_active(self, n: int, timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        """Wait until at least ``n`` chat requests are active at the same time."""
        await self._wait_until(lambda: self.active >= n, timeout, f"{n} active requests")

    async def wait_idle(self, timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        """Wait until no chat request is active."""
        await self._wait_until(lambda: self.active == 0, timeout, "0 active requests")

    async def wait_for_disconnects(self, n: int, timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        """Wait until at least ``n`` client disconnects were observed."""
        await self._wait_until(lambda: self.disconnects >= n, timeout, f"{n} disconnects")

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise TimeoutError(
                f"fake provider: timed out after {timeout}s waiting for {what} "
                f"(chat_count={self.chat_count}, active={self.active}, "
                f"disconnects={self.disconnects})"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _changed(self) -> None:
        for predicate, fut in list(self._waiters):
            if not fut.done() and predicate():
                fut.set_result(None)

    # ---------------------------------------------------------------- HTTP plumbing

    async def _handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        self.connections += 1
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                if not await self._dispatch(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # Cancelled by stop(): end quietly. Python 3.11's StreamReaderProtocol would
            # otherwise log the CancelledError of this connection task as an error.
            pass
        finally:
            writer.close()
            if task is not None:
                self._conn_tasks.discard(task)

    async def _read_request(
        self, reader: asyncio.StreamReader
    ) -> tuple[str, str, dict[str, str], bytes] | None:
        line = await reader.readline()
        while line in (b"\r\n", b"\n"):
            line = await reader.readline()
        if not line:
            return None
        parts = line.decode("latin-1").split()
        if len(parts) < 2:
            return None
        method, target = parts[0].upper(), parts[1]
        headers: dict[str, str] = {}
        while True:
            hline = await reader.readline()
            if hline in (b"\r\n", b"\n", b""):
                break
            name, _, value = hline.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length < 0 or length > _MAX_BODY:
            return None
        body = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0]
        return method, path, headers, body

    async def _dispatch(
        self,
        request: tuple[str, str, dict[str, str], bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; return whether the connection may be reused."""
        method, path, headers, raw = request
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        self.requests.append(RecordedRequest(method, path, headers, body))
        keep = headers.get("connection", "").lower() != "close"
        route = path.rstrip("/")

        if route.endswith("/chat/completions"):
            if method != "POST":
                return await self._send_error(writer, 405, "Use POST", keep=keep)
            self.chat_count += 1
            self._changed()
            if not self._authorized(headers):
                return await self._send_error(writer, 401, "Invalid API key", keep=keep)
            if bad_json or not isinstance(body, dict):
                return await self._send_error(writer, 400, "Body must be a JSON object", keep=keep)
            return await self._chat(body, reader, writer, keep)
        if route.endswith("/models") and method == "GET":
            if not self._authorized(headers):
                return await self._send_error(writer, 401, "Invalid API key", keep=keep)
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            return await self._send_json(writer, 200, {"object": "list", "data": data}, keep=keep)
        return await self._send_error(writer, 404, f"Unknown path {method} {path}", keep=keep)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if not self.require_key:
            return True
        return headers.get("authorization", "") == f"Bearer {self.require_key}"

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
        body: bytes = b"",
    ) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer.write(head + body)
        await writer.drain()

    async def _send_json(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        *,
        keep: bool,
        extra: dict[str, str] | None = None,
    ) -> bool:
        data = json.dumps(payload).encode()
        headers = {
            "content-type": "application/json",
            "content-length": str(len(data)),
            "connection": "keep-alive" if keep else "close",
            "x-request-id": f"fake-{len(self.requests)}",
        }
        headers.update(extra or {})
        await self._send(writer, status, headers, data)
        return keep

    async def _send_malformed(
        self,
        writer: asyncio.StreamWriter,
        stream: bool,
        keep: bool,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> bool:
        """A 200 whose body does not parse: what a broken gateway or proxy sends."""
        kind = content_type or ("text/event-stream" if stream else "application/json")
        if body is None:
            body = b"data: {not json\n\n" if stream else b"<html>502 upstream garbled</html>"
        keep = keep and self.keep_alive
        headers = {
            "content-type": kind,
            "content-length": str(len(body)),
            "connection": "keep-alive" if keep else "close",
        }
        await self._send(writer, 200, headers, body)
        return keep

    async def _send_error(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        message: str | None = None,
        *,
        keep: bool,
        retry_after: float | None = None,
    ) -> bool:
        etype, code = _ERROR_TYPES.get(status, ("server_error", "internal_error"))
        if status < 500 and status not in _ERROR_TYPES:
            etype, code = "invalid_request_error", f"http_{status}"
        payload = {
            "error": {
                "message": message or f"Fake provider error {status}",
                "type": etype,
                "code": code,
            }
        }
        extra = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
        return await self._send_json(writer, status, payload, keep=keep, extra=extra)

    # ---------------------------------------------------------------- chat

    def _next_reply(self) -> Reply:
        if self._queue:
            return self._queue.popleft()
        if self.fail_rate > 0 and self._rng.random() < self.fail_rate:
            return Reply(status=500, error_message="Fake random failure")
        return Reply()

    async def _chat(
        self,
        body: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keep: bool,
    ) -> bool:
        reply = self._next_reply()
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self._changed()
        eof_task = asyncio.ensure_future(_watch_eof(reader))
        try:
            gate = self._gate
            if gate is not None and not gate.is_set():
                await _race(gate.wait(), eof_task)
            delay = reply.delay if reply.delay is not None else self.latency
            if delay and delay > 0:
                await _race(asyncio.sleep(delay), eof_task)
            if reply.hang:
                await _race(asyncio.Event().wait(), eof_task)
            if reply.malformed:
                stream = bool(body.get("stream"))
                return await self._send_malformed(
                    writer, stream, keep, reply.malformed_body, reply.content_type
                )
            if reply.status != 200:
                return await self._send_error(
                    writer,
                    reply.status,
                    reply.error_message,
                    keep=keep,
                    retry_after=reply.retry_after,
                )
            model = str(body.get("model") or "fake-model")
            messages = body.get("messages") or []
            text, prompt_tokens = self._answer_for(model, messages, reply)
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(text.split()),
                "total_tokens": prompt_tokens + len(text.split()),
            }
            if body.get("stream"):
                opts = body.get("stream_options") or {}
                include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
                keep = keep and self.keep_alive
                await self._stream(
                    writer,
                    eof_task,
                    model,
                    text,
                    usage if include_usage else None,
                    self.reasoning,
                    keep=keep,
                    cut_after=reply.cut_after,
                )
                return keep
            payload = {
                "id": f"chatcmpl-fake-{self.chat_count}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": usage,
            }
            return await self._send_json(writer, 200, payload, keep=keep)
        except (_Disconnected, ConnectionError):
            self.disconnects += 1
            return False
        finally:
            eof_task.cancel()
            with contextlib.suppress(BaseException):
                await eof_task
            self.active -= 1
            self._changed()

    def _answer_for(self, model: str, messages: Any, reply: Reply) -> tuple[str, int]:
        chars = 0
        count = 0
        if isinstance(messages, list):
            count = len(messages)
            for msg in messages:
                content = msg.get("content") if isinstance(msg, dict) else None
                if isinstance(content, str):
                    chars += len(content)
                elif isinstance(content, list):
                    for part in content:
                        if isinstance(part, dict) and isinstance(part.get("text"), str):
                            chars += len(part["text"])
        if reply.text is not None:
            text = reply.text
        elif self.answer is not None:
            text = self.answer
        else:
            text = (
                f"Fake expert answer from {model}: received {count} messages "
                f"with {chars} characters in total."
            )
        return text, max(1, (chars + 3) // 4)

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        eof_task: asyncio.Future[None],
        model: str,
        text: str,
        usage: dict[str, int] | None,
        reasoning: str | None = None,
        *,
        keep: bool = False,
        cut_after: int | None = None,
    ) -> None:
        """SSE events; with `keep`, chunked so the connection outlives the answer."""
        base = {
            "id": f"chatcmpl-fake-{self.chat_count}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        def event(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
            chunk = {
                **base,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(chunk)}\n\n".encode()

        def frame(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data) if keep else data

        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "connection": "keep-alive" if keep else "close",
            "x-request-id": f"fake-{len(self.requests)}",
        }
        if keep:
            headers["transfer-encoding"] = "chunked"
        await self._send(writer, 200, headers)
        writer.write(frame(event({"role": "assistant", "content": ""}, None)))
        await writer.drain()
        sent = 0
        # A thinking model's reasoning streams first, then the answer itself.
        for key, source in (("reasoning_content", reasoning or ""), ("content", text)):
            for piece in _split_chunks(source):
                if eof_task.done():
                    raise _Disconnected
                if key == "content" and cut_after is not None and sent >= cut_after:
                    writer.transport.abort()  # mid-answer, as a crashed upstream worker does
                    raise _Disconnected
                if self.chunk_delay > 0:
                    await _race(asyncio.sleep(self.chunk_delay), eof_task)
                writer.write(frame(event({key: piece}, None)))
                await writer.drain()
                sent += key == "content"
        final = event({}, "stop", usage=usage) if usage is not None else event({}, "stop")
        writer.write(frame(final + b"data: [DONE]\n\n") + (b"0\r\n\r\n" if keep else b""))
        await writer.drain()


def _split_chunks(text: str, words_per_chunk: int = 2) -> list[str]:
    """Split text into pieces of a few words whose concatenation is exactly ``text``."""
    words = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    if "".join(words) != text:  # pure-whitespace text
        return [text] if text else []
    return ["".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)]


async def _watch_eof(reader: asyncio.StreamReader) -> None:
    """Return when the client closes (or resets) the connection."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass


async def _race(coro: Any, eof_task: asyncio.Future[None]) -> None:
    """Await ``coro``; raise ``_Disconnected`` if the client disconnects first."""
    if eof_task.done():
        coro.close()
        raise _Disconnected
    main = asyncio.ensure_future(coro)
    try:
        await asyncio.wait({main, eof_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(BaseException):
                await main
    if not main.done() or main.cancelled() or eof_task.done():
        raise _Disconnected
    main.result()


# -------------------------------------------------------------------- script mode


def _stdin_is_watchable() -> bool:
    """True when stdin is a pipe, socket or terminal (not /dev/null or a regular file)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(sys.stdin.fileno())


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    fd = sys.stdin.fileno()
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(stop.set)


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    fake = FakeProvider(
        latency=args.latency,
        chunk_delay=args.chunk_delay,
        answer=args.answer,
        require_key=args.require_key,
        fail_rate=args.fail_rate,
        seed=args.seed,
        port=args.port,
        keep_alive=not args.close_streams,
    )
    async with fake:
        sys.stdout.write(fake.url + "\n")
        sys.stdout.flush()
        if not args.no_stdin_watch and _stdin_is_watchable():
            threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: serve until SIGTERM/SIGINT or stdin EOF."""
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible provider (127.0.0.1).")
    parser.add_argument("--port", type=int, default=0, help="port (0 = ephemeral)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--answer", default=None, help="fixed answer text for every request")
    parser.add_argument("--require-key", default=None, help="only accept this bearer key")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of random 500s")
    parser.add_argument("--seed", type=int, default=0, help="seed for --fail-rate")
    parser.add_argument(
        "--close-streams",
        action="store_true",
        help="close the connection after every streamed answer (the old behaviour)",
    )
    parser.add_argument(
        "--no-stdin-watch", action="store_true", help="do not exit when stdin reaches EOF"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
