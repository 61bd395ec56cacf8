"""The circuit breaker opens after repeated failures, fails fast, routes auto, and closes on a probe."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_provider import FakeProvider, Reply

from exai_mcp.errors import BadRequest, BreakerOpen, ProviderUnavailable, RateLimited
from exai_mcp.middleware.breaker import BreakerState, CircuitBreaker
from tests.conftest import in_process_client, read_status, settings_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def fail_with(breaker: CircuitBreaker, exc: Exception) -> None:
    with pytest.raises(type(exc)):
        async with breaker.guard():
            raise exc


async def test_breaker_opens_fails_fast_and_closes_after_a_good_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker("kimi", failures=3, cooldown=30, clock=clock)
    for _ in range(3):
        await fail_with(breaker, ProviderUnavailable("503"))
    assert breaker.state is BreakerState.OPEN and not breaker.available()

    with pytest.raises(BreakerOpen, match="tried again in 30 s"):
        async with breaker.guard():
            pytest.fail("an open breaker must not call the provider")

    clock.now = 30
    assert breaker.state is BreakerState.HALF_OPEN and breaker.available()
    async with breaker.guard():
        pass  # the probe succeeds
    assert breaker.state is BreakerState.CLOSED


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker("glm", failures=1, cooldown=10, clock=clock)
    await fail_with(breaker, ProviderUnavailable("503"))
    clock.now = 10
    await fail_with(breaker, ProviderUnavailable("503"))
    assert breaker.state is BreakerState.OPEN and breaker.times_opened == 2


async def test_client_errors_and_rate_limits_do_not_open_the_breaker() -> None:
    breaker = CircuitBreaker("kimi", failures=1, cooldown=10)
    await fail_with(breaker, BadRequest("400"))
    await fail_with(breaker, RateLimited("429"))
    assert breaker.state is BreakerState.CLOSED


async def test_open_provider_fails_fast_and_auto_goes_to_the_other_provider(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(status=500))
    settings = settings_for(fake, tmp_path, EXAI_BREAKER_FAILURES=1, EXAI_MAX_ATTEMPTS=1)
    async with in_process_client(settings) as client:
        failed = await client.call_tool("analyze", {"text": "q1", "model": "kimi-k2"})
        fast = await client.call_tool("analyze", {"text": "q2", "model": "kimi-k2"})
        routed = await client.call_tool("analyze", {"text": "q3", "model": "auto"})
        status = await read_status(client)
    assert failed.is_error and fast.is_error
    assert "will be tried again in" in fast.content[0].text
    assert fake.chat_count == 2  # the fast failure never reached the provider
    assert routed.structured_content["provider"] == "glm"
    assert fake.chat_requests[-1].path == "/api/paas/v4/chat/completions"
    assert status["providers"]["kimi"]["breaker"]["state"] == "open"
