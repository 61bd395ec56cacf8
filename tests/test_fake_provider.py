"""Tests for scripts/fake_provider.py using the real openai SDK over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fake_provider import FakeProvider, Reply

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fake_provider.py"

MESSAGES = [
    {"role": "system", "content": "You are an expert."},
    {"role": "user", "content": "Review this code please."},
]


def make_client(fake: object, prefix: str = "/v1", key: str = "test") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=key, base_url=fake.base_url(prefix), max_retries=0, timeout=5.0
    )


async def test_non_stream_answer_and_usage() -> None:
    async with FakeProvider(latency=0.0) as fake, make_client(fake) as client:
        r = await client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
        text = r.choices[0].message.content
        assert text is not None and "kimi-k2" in text
        assert "2 messages" in text
        assert r.choices[0].finish_reason == "stop"
        assert r.model == "kimi-k2"
        chars = sum(len(m["content"]) for m in MESSAGES)
        assert r.usage is not None
        assert r.usage.prompt_tokens == (chars + 3) // 4
        assert r.usage.completion_tokens == len(text.split())
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        assert fake.chat_count == 1
        req = fake.requests[0]
        assert req.method == "POST"
        assert req.path == "/v1/chat/completions"
        assert req.headers["authorization"] == "Bearer test"
        assert req.body["model"] == "kimi-k2"
        assert req.body["messages"] == MESSAGES
        # keep-alive: a second call works on the same client
        r2 = await client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
        assert r2.choices[0].message.content == text
        assert fake.chat_count == 2


async def test_stream_equals_non_stream() -> None:
    async with FakeProvider() as fake, make_client(fake) as client:
        r = await client.chat.completions.create(model="glm-4.6", messages=MESSAGES)
        expected = r.choices[0].message.content
        stream = await client.chat.completions.create(
            model="glm-4.6",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces: list[str] = []
        finish = None
        usage = None
        async for chunk in stream:
            if chunk.choices:
                if chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage
        assert "".join(pieces) == expected
        assert len([p for p in pieces if p]) > 1
        assert finish == "stop"
        assert usage is not None and usage.total_tokens == r.usage.total_tokens


async def test_answer_override_and_glm_prefix() -> None:
    async with FakeProvider() as fake, make_client(fake, "/api/paas/v4") as client:
        fake.answer = "fixed answer"
        r = await client.chat.completions.create(model="glm-4.6", messages=MESSAGES)
        assert r.choices[0].message.content == "fixed answer"
        fake.enqueue(Reply(text="scripted"))
        r = await client.chat.completions.create(model="glm-4.6", messages=MESSAGES)
        assert r.choices[0].message.content == "scripted"
        assert fake.requests[-1].path == "/api/paas/v4/chat/completions"


async def test_rate_limit_with_retry_after() -> None:
    async with FakeProvider() as fake, make_client(fake) as client:
        fake.enqueue(Reply(status=429, retry_after=2, error_message="slow down"))
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
        assert info.value.status_code == 429
        assert info.value.response.headers["retry-after"] == "2"
        assert "slow down" in info.value.message
        # queue drained: the next request gets the default answer
        r = await client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
        assert "kimi-k2" in (r.choices[0].message.content or "")


async def test_internal_server_error() -> None:
    async with FakeProvider() as fake, make_client(fake) as client:
        fake.enqueue(Reply(status=500))
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
        assert info.value.status_code == 500
        assert isinstance(info.value.body, dict) and info.value.body["type"] == "server_error"


async def test_require_key() -> None:
    async with FakeProvider(require_key="secret") as fake:
        async with make_client(fake, key="wrong") as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
        async with make_client(fake, key="secret") as client:
            r = await client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
            assert r.choices[0].message.content


async def test_hold_release_concurrency() -> None:
    async with FakeProvider() as fake, make_client(fake) as client:
        fake.hold()
        tasks = [
            asyncio.create_task(client.chat.completions.create(model=f"m{i}", messages=MESSAGES))
            for i in range(5)
        ]
        try:
            await fake.wait_for_active(5, timeout=3)
            assert fake.active == 5
            assert fake.max_active == 5
            assert not any(t.done() for t in tasks)
            fake.release()
            async with asyncio.timeout(3):
                results = await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        assert sorted(r.model for r in results) == [f"m{i}" for i in range(5)]
        await fake.wait_idle(timeout=3)
        assert fake.max_active == 5
        assert fake.disconnects == 0


async def test_cancel_during_hang_is_a_disconnect() -> None:
    async with FakeProvider() as fake, make_client(fake) as client:
        fake.enqueue(Reply(hang=True))
        task = asyncio.create_task(
            client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
        )
        await fake.wait_for_requests(1, timeout=3)
        await fake.wait_for_active(1, timeout=3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await fake.wait_for_disconnects(1, timeout=3)
        await fake.wait_idle(timeout=3)
        assert fake.disconnects == 1
        # the fake still serves afterwards
        r = await client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
        assert r.choices[0].message.content


async def test_cancel_during_stream_and_latency_are_disconnects() -> None:
    async with FakeProvider() as fake, make_client(fake) as client:
        fake.chunk_delay = 0.05
        got_first = asyncio.Event()

        async def consume() -> None:
            stream = await client.chat.completions.create(
                model="kimi-k2", messages=MESSAGES, stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got_first.set()

        task = asyncio.create_task(consume())
        async with asyncio.timeout(3):
            await got_first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await fake.wait_for_disconnects(1, timeout=3)

        fake.chunk_delay = 0.0
        fake.latency = 10.0
        task = asyncio.create_task(
            client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
        )
        await fake.wait_for_active(1, timeout=3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await fake.wait_for_disconnects(2, timeout=3)
        await fake.wait_idle(timeout=3)
        fake.reset()
        assert (fake.chat_count, fake.disconnects, fake.requests) == (0, 0, [])


async def test_wait_times_out() -> None:
    async with FakeProvider() as fake:
        with pytest.raises(TimeoutError):
            await fake.wait_for_requests(1, timeout=0.05)


async def test_models_list_and_unknown_path() -> None:
    async with FakeProvider() as fake, make_client(fake) as client:
        page = await client.models.list()
        ids = [m.id for m in page.data]
        assert ids == list(fake.models)
        assert all(m.owned_by == "fake" for m in page.data)
        with pytest.raises(openai.NotFoundError):
            await client.get("/nope", cast_to=object)


async def test_fail_rate_is_seeded() -> None:
    async def statuses() -> list[int]:
        out: list[int] = []
        async with FakeProvider(fail_rate=0.5, seed=7) as fake, make_client(fake) as client:
            for _ in range(8):
                try:
                    await client.chat.completions.create(model="m", messages=MESSAGES)
                    out.append(200)
                except openai.InternalServerError:
                    out.append(500)
        return out

    first = await statuses()
    assert first == await statuses()
    assert 200 in first and 500 in first


@contextlib.contextmanager
def _spawn(*args: str) -> Iterator[subprocess.Popen[str]]:
    """Run the script as a subprocess; always stop it and close its pipes."""
    with subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def _readline_with_timeout(proc: subprocess.Popen[str], timeout: float) -> str:
    """Read one stdout line from ``proc`` without blocking forever."""
    result: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        raise TimeoutError("fake provider script printed no URL line")
    return result[0].strip()


def test_script_mode_prints_url_and_exits_on_stdin_eof() -> None:
    with _spawn("--port", "0", "--answer", "hi") as proc:
        line = _readline_with_timeout(proc, 10)
        assert line.startswith("http://127.0.0.1:")
        assert int(line.rsplit(":", 1)[1]) > 0

        async def call() -> str | None:
            async with openai.AsyncOpenAI(
                api_key="k", base_url=line + "/v1", max_retries=0, timeout=5
            ) as client:
                r = await client.chat.completions.create(model="m", messages=MESSAGES)
                return r.choices[0].message.content

        assert asyncio.run(call()) == "hi"
        # closing stdin (as when the parent dies) makes it exit cleanly
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == ""  # nothing else was printed


def test_script_mode_sigterm() -> None:
    with _spawn("--latency", "0.5") as proc:
        assert _readline_with_timeout(proc, 10).startswith("http://127.0.0.1:")
        proc.terminate()
        assert proc.wait(timeout=5) == 0


async def stream_three(fake: FakeProvider) -> list[str]:
    """Three streamed answers, one after another, on one SDK client (one connection pool)."""
    texts = []
    async with make_client(fake) as client:
        for _ in range(3):
            stream = await client.chat.completions.create(
                model="kimi-k2", messages=MESSAGES, stream=True
            )
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            texts.append("".join(parts))
    return texts


async def test_streamed_answers_keep_their_connection_alive() -> None:
    async with FakeProvider(answer="one two three") as fake:
        assert await stream_three(fake) == ["one two three"] * 3
        assert fake.connections == 1  # like a real provider: no TCP connect per call


async def test_the_close_switch_makes_every_stream_reconnect_and_each_still_answers() -> None:
    async with FakeProvider(answer="one two three", keep_alive=False) as fake:
        assert await stream_three(fake) == ["one two three"] * 3
        assert fake.connections == 3 and fake.chat_count == 3


def test_script_mode_close_streams_flag_turns_keep_alive_off() -> None:
    with _spawn("--close-streams", "--answer", "hi") as proc:
        line = _readline_with_timeout(proc, 10)

        async def connection_headers() -> list[str | None]:
            async with openai.AsyncOpenAI(
                api_key="k", base_url=line + "/v1", max_retries=0, timeout=5
            ) as client:
                seen = []
                for _ in range(2):
                    raw = await client.chat.completions.with_raw_response.create(
                        model="m", messages=MESSAGES, stream=True
                    )
                    seen.append(raw.headers.get("connection"))
                    async for _chunk in raw.parse():
                        pass
                return seen

        assert asyncio.run(connection_headers()) == ["close", "close"]
