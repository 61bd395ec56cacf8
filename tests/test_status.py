"""`status`: what an operator needs to see, available even when every permit is taken."""

from __future__ import annotations

from pathlib import Path

import anyio
from fake_provider import FakeProvider

from tests.conftest import in_process_client, read_status, settings_for


async def test_status_answers_while_every_permit_is_taken_and_touches_no_cache(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.hold()
    settings = settings_for(fake, tmp_path, EXAI_MAX_INFLIGHT=1, WORKFLOW_TOOL_TIMEOUT_SECS=7)
    async with in_process_client(settings) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.call_tool, "analyze", {"text": "holds the only permit"})
        await fake.wait_for_requests(1)
        with anyio.fail_after(2):
            first = await read_status(client)
            second = await read_status(client)
        fake.release()

    assert first["limits"]["global"] == {
        "limit": 1,
        "in_use": 1,
        "waiting": 0,
        "holders": first["limits"]["global"]["holders"],
    }
    assert first["limits"]["global"]["holders"][0]["tool"] == "analyze"
    assert first["inflight"] == 1
    assert first["cache"] == second["cache"]  # status reads the cache, never uses it
    assert first["timeouts"]["server_deadline_secs"] == 11  # ceil(1.5 x 7)
    assert first["timeouts"]["client_minimum_secs"] == 18  # ceil(2.5 x 7)
    assert set(first["providers"]) == {"kimi", "glm"}
    assert first["providers"]["kimi"]["breaker"]["state"] == "closed"
    assert first["health"] == []
    assert first["process"]["rss_mib"] > 0 and first["process"]["peak_rss_mib"] > 0


async def test_status_without_keys_reports_providers_as_not_configured(tmp_path: Path) -> None:
    async with in_process_client(settings_for(None, tmp_path)) as client:
        status = await read_status(client)
    assert status["providers"] == {"kimi": {"configured": False}, "glm": {"configured": False}}
    assert set(status["limits"]) == {"global"}
