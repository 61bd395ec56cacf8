"""Per-client limits: one busy client queues behind itself, never in front of another client.

The in-process MCP client is one session, so these tests drive `Pipeline.run` with different
`client=` values against the fake provider, through the services the real server builds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from fake_provider import FakeProvider

from exai_mcp.errors import BusyError
from exai_mcp.middleware.call import Call
from exai_mcp.middleware.clients import ClientLimit, ClientLimits
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.middleware.health import HealthMonitor
from exai_mcp.middleware.pipeline import compose
from exai_mcp.server import build_services, open_store
from exai_mcp.services import Services
from exai_mcp.tools import analyze, status
from tests.conftest import settings_for

WAIT = 5.0  # every wait in these tests is bounded by this


@asynccontextmanager
async def services_for(fake: FakeProvider, tmp_path: Path, **extra: Any) -> AsyncIterator[Services]:
    """The server's services (pipeline, limits, health) over the fake, without a transport.

    Provider and global limits are raised so that only the per-client limit binds."""
    settings = settings_for(
        fake,
        tmp_path,
        EXAI_MAX_INFLIGHT=100,
        EXAI_KIMI_MAX_INFLIGHT=100,
        **extra,
    )
    store = open_store(settings)
    try:
        async with anyio.create_task_group() as tg:
            services = build_services(settings, tg, store)
            try:
                yield services
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    for provider in services.pool.providers.values():
                        await provider.aclose()
    finally:
        store.close()


def ask(services: Services, client: str, text: str) -> Callable[[], Any]:
    """One `analyze` call from `client`, as the server would run it."""
    args = analyze.AnalyzeInput.model_validate({"text": text})
    return lambda: services.pipeline.run(
        "analyze", f"{client}-{text}", lambda: analyze.plan(args, services), client=client
    )


async def until(predicate: Callable[[], bool]) -> None:
    """Poll (bounded in time) until predicate() holds: the limiters' counts are cheap to read."""
    with anyio.fail_after(WAIT):
        while True:
            if predicate():
                return
            await anyio.sleep(0.005)


async def test_a_busy_client_does_not_delay_another_clients_call(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    async with services_for(fake, tmp_path) as services, anyio.create_task_group() as tg:
        clients = services.pipeline.client_limits
        for i in range(12):
            tg.start_soon(ask(services, "A", f"a{i}"))
        await fake.wait_for_active(8, timeout=WAIT)  # A's first 8 at the provider...
        await until(lambda: clients.clients()["A"].waiting() == 4)  # ...4 queued behind them
        tg.start_soon(ask(services, "B", "b0"))
        await fake.wait_for_active(9, timeout=WAIT)  # B's call reached the provider at once
        assert clients.clients()["A"].waiting() == 4
        assert clients.clients()["B"].in_use() == 1
        fake.release()
    assert fake.chat_count == 13


async def test_a_client_never_has_more_than_its_limit_at_the_provider(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    async with (
        services_for(fake, tmp_path, EXAI_CLIENT_MAX_INFLIGHT=3) as services,
        anyio.create_task_group() as tg,
    ):
        for i in range(10):
            tg.start_soon(ask(services, "A", f"a{i}"))
        await fake.wait_for_active(3, timeout=WAIT)
        await until(lambda: services.pipeline.client_limits.waiting() == 7)
        assert fake.active == 3
        fake.release()
    assert fake.chat_count == 10 and fake.max_active == 3


async def test_the_limiters_of_idle_clients_are_dropped(fake: FakeProvider, tmp_path: Path) -> None:
    async with services_for(fake, tmp_path) as services:
        clients = services.pipeline.client_limits
        fake.hold()
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(ask(services, f"client-{n}", "q"))
            await until(lambda: len(clients.clients()) == 50)
            fake.release()
        assert clients.clients() == {}  # no holder, no waiter: forgotten
        await ask(services, "late", "q")()  # a cache hit takes no permit at all
        assert clients.clients() == {}


async def test_a_cache_hit_does_not_queue_behind_its_clients_running_calls(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with services_for(fake, tmp_path, EXAI_CLIENT_MAX_INFLIGHT=1) as services:
        await ask(services, "A", "known")()
        fake.hold()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask(services, "A", "slow"))  # takes A's only permit, and keeps it
            await fake.wait_for_active(1, timeout=WAIT)
            with anyio.fail_after(WAIT):
                known = await ask(services, "A", "known")()
            assert known.cached
            assert services.pipeline.client_limits.clients()["A"].in_use() == 1  # still held
            fake.release()
    assert fake.chat_count == 2


async def test_identical_calls_that_queued_for_their_clients_permit_find_the_cached_answer(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    async with (
        services_for(fake, tmp_path, EXAI_CLIENT_MAX_INFLIGHT=2) as services,
        anyio.create_task_group() as tg,
    ):
        answers: list[Any] = []

        async def same_question() -> None:
            answers.append(await ask(services, "A", "same")())

        for _ in range(6):
            tg.start_soon(same_question)
        await fake.wait_for_active(1, timeout=WAIT)  # the two with permits share one request
        await until(lambda: services.pipeline.client_limits.waiting() == 4)
        fake.release()
    # The four that queued found the answer cached after their wait: no second request.
    assert fake.chat_count == 1
    assert sorted(a.cached for a in answers) == [False, False, True, True, True, True]


async def test_a_cancelled_waiter_leaks_nothing(fake: FakeProvider, tmp_path: Path) -> None:
    fake.hold()
    async with services_for(fake, tmp_path, EXAI_CLIENT_MAX_INFLIGHT=1) as services:
        clients = services.pipeline.client_limits
        waiter = anyio.CancelScope()

        async def second() -> None:
            with waiter:
                await ask(services, "A", "second")()

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask(services, "A", "first"))
            await fake.wait_for_active(1, timeout=WAIT)
            tg.start_soon(second)
            await until(lambda: clients.clients()["A"].waiting() == 1)
            waiter.cancel()
            await until(lambda: clients.clients()["A"].waiting() == 0)
            assert clients.clients()["A"].in_use() == 1  # the holder keeps its permit
            fake.release()
        assert clients.clients() == {}
        assert services.health.problems() == {}
    assert fake.chat_count == 1  # the cancelled waiter never reached the provider


async def test_status_lists_the_busy_clients_with_in_use_and_waiting(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    async with (
        services_for(fake, tmp_path, EXAI_CLIENT_MAX_INFLIGHT=2) as services,
        anyio.create_task_group() as tg,
    ):
        for i in range(3):
            tg.start_soon(ask(services, "session-a", f"a{i}"))
        tg.start_soon(ask(services, "rest-b", "b"))
        await fake.wait_for_active(3, timeout=WAIT)
        await until(lambda: services.pipeline.client_limits.waiting() == 1)
        seen = (await status.status(status.StatusInput(), services)).model_dump(mode="json")
        fake.release()
    after = (await status.status(status.StatusInput(), services)).model_dump(mode="json")
    clients = seen["clients"]
    assert set(clients) == {"session-a", "rest-b"}
    assert clients["session-a"]["in_use"] == 2 and clients["session-a"]["waiting"] == 1
    assert clients["rest-b"]["in_use"] == 1 and clients["rest-b"]["waiting"] == 0
    assert clients["session-a"]["limit"] == 2
    assert {h["tool"] for h in clients["session-a"]["holders"]} == {"analyze"}
    assert after["clients"] == {}


# The layer on its own: a small chain whose end is a gate the test opens.


def call_from(client: str, request_id: str, deadline: float = WAIT, **changes: Any) -> Call:
    async def no_plan() -> Any:
        raise AssertionError("not used")

    return Call(
        tool="analyze",
        request_id=request_id,
        deadline=Deadline.after(deadline),
        prepare=no_plan,
        client=client,
        **changes,
    )


async def test_a_waiting_call_reports_progress_and_is_busy_when_its_deadline_runs_out() -> None:
    limits = ClientLimits(per_client=1)
    gate = anyio.Event()

    async def provider(_call: Call, call_next: Any) -> str:
        await gate.wait()
        return "done"

    handle = compose([ClientLimit(limits), provider])
    messages: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(handle, call_from("A", "r1"))
        await anyio.lowlevel.checkpoint()
        with pytest.raises(BusyError) as info:
            await handle(call_from("A", "r2", deadline=0.05, report=messages.append))
        gate.set()
    assert messages == ["waiting for a 'client A' permit: 0 ahead in line"]
    assert "'client A' permit" in str(info.value)
    assert limits.clients() == {}


async def test_the_health_monitor_sees_a_stuck_holder_of_a_client_that_came_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = ClientLimits(per_client=2)
    now = [0.0]
    monitor = HealthMonitor(
        lambda: limits.clients().values(), stuck_after=30, interval=60, clock=lambda: now[0]
    )
    assert monitor.check() == []  # built before any client arrived
    gate = anyio.Event()

    async def provider(_call: Call, call_next: Any) -> None:
        await gate.wait()

    caplog.set_level(logging.WARNING, logger="exai_mcp.health")
    async with anyio.create_task_group() as tg:
        tg.start_soon(compose([ClientLimit(limits), provider]), call_from("late", "req-9"))
        await anyio.lowlevel.checkpoint()
        now[0] = 1e9  # far past the deadline, without waiting for it
        problems = monitor.check()
        assert limits.clients()["late"].in_use() == 1  # reported, not released
        gate.set()
    assert len(problems) == 1 and "req-9" in problems[0]
    assert monitor.check() == [] and limits.clients() == {}
