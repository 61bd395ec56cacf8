"""A storm of calls with failures, hangs and cancellations leaves nothing behind."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
from fake_provider import FakeProvider, Reply

from tests.conftest import in_process_client, nothing_held, settings_for, wait_for_status


async def test_storm_of_200_calls_ends_with_nothing_in_flight_held_or_waiting(
    fake: FakeProvider, tmp_path: Path
) -> None:
    rng = random.Random(7)
    fake.latency = 0.01
    fake.fail_rate = 0.2
    fake.enqueue(*[Reply(hang=True) for _ in range(4)])
    settings = settings_for(
        fake,
        tmp_path,
        WORKFLOW_TOOL_TIMEOUT_SECS=2,
        EXAI_CANCEL_GRACE_SECS=0.1,
        EXAI_RESULT_CACHE_MAX_ENTRIES=16,
        EXAI_KIMI_MAX_INFLIGHT=3,
        EXAI_GLM_MAX_INFLIGHT=2,
        EXAI_MAX_INFLIGHT=8,
        EXAI_BREAKER_FAILURES=1000,
    )
    outcomes = {"ok": 0, "error": 0, "cancelled": 0}
    async with in_process_client(settings) as client:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    args = {
                        "text": f"question {rng.randrange(40)}",  # repeats: shared and cached
                        "model": rng.choice(["kimi-k2", "glm-4.5", "auto"]),
                    }
                    cancel_after = rng.uniform(0, 0.3) if rng.random() < 0.3 else None
                    tg.start_soon(_call, client, args, cancel_after, outcomes)
        status = await wait_for_status(client, nothing_held, timeout=10)
        await fake.wait_idle(timeout=10)
    assert sum(outcomes.values()) == 200
    assert outcomes["ok"] > 0 and outcomes["cancelled"] > 0
    assert status["cache"]["entries"] <= 16
    assert all(not lim["holders"] for lim in status["limits"].values())
    assert fake.max_active <= 5  # kimi 3 + glm 2


async def _call(client, args: dict, cancel_after: float | None, outcomes: dict) -> None:
    with anyio.move_on_after(cancel_after if cancel_after is not None else 30) as scope:
        result = await client.call_tool("analyze", args)
        outcomes["error" if result.is_error else "ok"] += 1
    if scope.cancelled_caught:
        outcomes["cancelled"] += 1
