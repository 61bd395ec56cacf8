"""A debug workflow through the real server process, including a restart between steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fake_provider import FakeProvider, Reply
from mcp import Client

from tests.conftest import provider_env, stdio_params

BUGGY = "def retry(times):\n    for i in range(times - 1):\n        attempt(i)\n"


def debug_step(number: int, relevant: Path, continuation_id: str | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {
        "kind": "debug",
        "step": f"Step {number}: trace why retry() makes one attempt too few",
        "step_number": number,
        "total_steps": 3,
        "next_step_required": number < 3,
        "findings": f"FINDING-{number}: observation from step {number}",
        "hypothesis": "range(times - 1) is off by one",
        "relevant_files": [str(relevant)],
        "files_checked": [str(relevant)],
        "confidence": "medium" if number < 3 else "high",
    }
    if continuation_id:
        args["continuation_id"] = continuation_id
    return args


async def run_step(client: Client, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool("workflow", args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


def assert_one_verdict_with_file_and_findings(fake: FakeProvider, final: dict[str, Any]) -> None:
    assert fake.chat_count == 1
    prompt = fake.chat_requests[0].body["messages"][-1]["content"]
    assert "    2│     for i in range(times - 1):" in prompt
    assert "FINDING-1: observation from step 1" in prompt
    assert "FINDING-2: observation from step 2" in prompt
    assert "FINDING-3: observation from step 3" in prompt
    assert final["status"] == "complete"
    assert final["expert_analysis"]["json"] == {"summary": "off by one", "root_cause": "range"}


async def test_a_three_step_debug_workflow_calls_the_expert_once_with_the_file_and_all_findings(
    fake: FakeProvider, tmp_path: Path
) -> None:
    relevant = tmp_path / "retry.py"
    relevant.write_text(BUGGY)
    fake.enqueue(Reply(text='{"summary": "off by one", "root_cause": "range"}'))
    async with Client(stdio_params(provider_env(fake, tmp_path))) as client:
        first = await run_step(client, debug_step(1, relevant))
        cid = first["continuation_id"]
        second = await run_step(client, debug_step(2, relevant, cid))
        assert fake.chat_count == 0
        assert first["status"] == second["status"] == "pause_for_debug"
        final = await run_step(client, debug_step(3, relevant, cid))

    assert_one_verdict_with_file_and_findings(fake, final)


async def test_a_debug_workflow_survives_a_server_restart_between_step_2_and_step_3(
    fake: FakeProvider, tmp_path: Path
) -> None:
    relevant = tmp_path / "retry.py"
    relevant.write_text(BUGGY)
    env = provider_env(fake, tmp_path)  # the same EXAI_STATE_DB file for both processes
    fake.enqueue(Reply(text='{"summary": "off by one", "root_cause": "range"}'))
    async with Client(stdio_params(env)) as client:
        cid = (await run_step(client, debug_step(1, relevant)))["continuation_id"]
        await run_step(client, debug_step(2, relevant, cid))
    async with Client(stdio_params(env)) as client:
        final = await run_step(client, debug_step(3, relevant, cid))

    assert final["continuation_id"] == cid
    assert final["thread"]["steps"] == 3
    assert_one_verdict_with_file_and_findings(fake, final)
