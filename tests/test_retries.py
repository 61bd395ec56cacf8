"""Retries honour Retry-After, stop when the budget cannot fit another try, and are counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_provider import FakeProvider, Reply

from exai_mcp.errors import DeadlineExceeded, ProviderUnavailable, RateLimited
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.middleware.retry import RetryPolicy, call_with_retries
from tests.conftest import in_process_client, read_status, settings_for


async def test_429_with_retry_after_is_honoured(fake: FakeProvider, tmp_path: Path) -> None:
    fake.enqueue(Reply(status=429, retry_after=0.6))
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        result = await client.call_tool("analyze", {"text": "q"})
        status = await read_status(client)
    assert not result.is_error
    first, second = fake.chat_requests
    assert second.time - first.time >= 0.6
    kimi = status["providers"]["kimi"]
    assert kimi["requests"] == 2 and kimi["retries"] == 1
    assert kimi["errors"] == {"rate_limited": 1}


async def test_5xx_is_retried_and_then_succeeds(fake: FakeProvider, tmp_path: Path) -> None:
    fake.enqueue(Reply(status=502))
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        result = await client.call_tool("analyze", {"text": "q"})
    assert not result.is_error and fake.chat_count == 2


async def test_a_retry_after_longer_than_the_budget_ends_the_call_at_once(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(status=429, retry_after=30))
    settings = settings_for(fake, tmp_path, WORKFLOW_TOOL_TIMEOUT_SECS=5)
    async with in_process_client(settings) as client:
        result = await client.call_tool("analyze", {"text": "q"})
    assert result.is_error
    text = result.content[0].text
    assert text.startswith("kimi:kimi-k2-0905-preview is rate limited")
    assert "wait 30 s" in text and "for another" in text and "WORKFLOW_TOOL_TIMEOUT_SECS" in text
    assert fake.chat_count == 1


async def test_client_errors_are_never_retried(fake: FakeProvider, tmp_path: Path) -> None:
    for i, status in enumerate((400, 401, 403, 404)):
        fake.enqueue(Reply(status=status))
        # A fresh server each time: a rejected key (401/403) also pauses the provider.
        async with in_process_client(settings_for(fake, tmp_path)) as client:
            result = await client.call_tool("analyze", {"text": f"q{i}", "model": "kimi-k2"})
        assert result.is_error and f"HTTP {status}" in result.content[0].text
        assert fake.chat_count == i + 1


async def test_attempts_stop_at_the_configured_maximum(fake: FakeProvider, tmp_path: Path) -> None:
    fake.enqueue(*[Reply(status=500)] * 5)
    settings = settings_for(fake, tmp_path, EXAI_MAX_ATTEMPTS=2)
    async with in_process_client(settings) as client:
        result = await client.call_tool("analyze", {"text": "q", "model": "kimi-k2"})
    assert result.is_error and "HTTP 500" in result.content[0].text
    assert fake.chat_count == 2


async def test_the_backoff_waits_at_least_the_providers_retry_after() -> None:
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    replies = iter([RateLimited("429", retry_after=20.0), "answer"])

    async def attempt() -> str:
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return reply

    policy = RetryPolicy(max_attempts=3, initial_delay=0.5, sleep=record)
    result = await call_with_retries(attempt, policy=policy, deadline=Deadline.after(60))
    assert result == "answer"
    assert waited == [20.0]  # not the 0.5 s backoff, and no real 20 s wait


async def test_a_retry_after_past_the_deadline_stops_without_sleeping() -> None:
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    async def attempt() -> str:
        raise RateLimited("429", retry_after=20.0)

    policy = RetryPolicy(max_attempts=3, sleep=record)
    with pytest.raises(DeadlineExceeded, match="no time left in the 10 s budget"):
        await call_with_retries(attempt, policy=policy, deadline=Deadline.after(10))
    assert waited == []


async def test_the_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    """initial_delay * 2**(n-1) + uniform(0, jitter) after the n-th failure, at most max_delay;
    each retry is reported before its wait, and the last failure is not waited after."""
    waited: list[float] = []
    reported: list[tuple[int, float]] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    async def attempt() -> str:
        raise ProviderUnavailable("503", provider="kimi", model="m")

    policy = RetryPolicy(max_attempts=6, initial_delay=0.5, max_delay=8.0, jitter=0.5, sleep=record)
    with pytest.raises(ProviderUnavailable, match="6 attempts"):
        await call_with_retries(
            attempt,
            policy=policy,
            deadline=Deadline.after(600),
            on_retry=lambda n, _exc, delay: reported.append((n, delay)),
        )
    assert len(waited) == 5
    for n, seconds in enumerate(waited, start=1):
        low = 0.5 * 2 ** (n - 1)
        assert min(low, 8.0) <= seconds <= min(low + 0.5, 8.0)
    assert waited[-1] == 8.0  # 0.5 * 2**4 = 8 is already the cap
    assert reported == list(enumerate(waited, start=1))
