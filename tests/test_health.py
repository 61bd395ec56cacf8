"""The health monitor reports stuck and unaccounted permits, and never releases them itself."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import pytest

from exai_mcp.middleware.deadline import Deadline
from exai_mcp.middleware.health import HealthMonitor
from exai_mcp.middleware.limits import Holder, TrackedLimiter


async def test_a_holder_older_than_the_deadline_is_reported_once_and_not_released(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = TrackedLimiter("kimi", 2)
    now = [0.0]
    monitor = HealthMonitor([limiter], stuck_after=30, interval=60, clock=lambda: now[0])
    release = anyio.Event()
    caplog.set_level(logging.INFO, logger="exai_mcp.health")

    async def hold() -> None:
        holder = Holder("req-42", "workflow", "kimi", since=0.0)
        async with limiter.hold(holder, Deadline.after(10)):
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await anyio.lowlevel.checkpoint()
        now[0] = 29.0
        assert monitor.check() == []
        now[0] = 31.0  # past the deadline, without waiting for it
        problems = monitor.check()
        monitor.check()  # unchanged: nothing more is logged
        assert limiter.in_use() == 1  # reported, not released
        release.set()
    assert len(problems) == 1 and "req-42" in problems[0] and "workflow" in problems[0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "req-42" in warnings[0].getMessage()
    assert monitor.check() == []
    assert any("accounted for again" in r.getMessage() for r in caplog.records)


async def test_a_permit_taken_behind_the_limiters_back_is_reported() -> None:
    limiter = TrackedLimiter("glm", 2)
    limiter._limiter.acquire_on_behalf_of_nowait("rogue")  # simulate a leak
    problems = HealthMonitor([limiter], stuck_after=10, interval=60).check()
    assert problems == ["limiter 'glm': 1 permits in use but 0 known holders"]


async def test_a_quiet_server_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exai_mcp.health")
    monitor = HealthMonitor([TrackedLimiter("global", 4)], stuck_after=10, interval=60)
    for _ in range(3):
        monitor.check()
    assert caplog.records == []
