"""The timeout hierarchy: validated at start-up, and every request ends by its deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_provider import FakeProvider, Reply

from exai_mcp.config import Settings, Timeouts
from tests.conftest import in_process_client, settings_for


def timeouts_for(**values: float) -> Timeouts:
    return Settings(**values).timeouts()


@pytest.mark.parametrize(
    ("tool", "deadline", "client"),
    [(1, 2, 3), (3, 5, 8), (7, 11, 18), (180, 270, 450), (3600, 5400, 9000)],
)
def test_deadlines_are_rounded_up_so_odd_tool_timeouts_keep_the_ratios(
    tool: int, deadline: int, client: int
) -> None:
    t = timeouts_for(tool_timeout=tool)
    assert (t.server_deadline, t.client_minimum) == (deadline, client)
    assert t.server_deadline >= 1.5 * tool and t.client_minimum >= 2.5 * tool


def test_provider_and_expert_timeouts_follow_the_tool_timeout_by_default() -> None:
    t = timeouts_for(tool_timeout=40)
    assert (t.expert, t.kimi, t.glm) == (40, 40, 40)
    assert t.problems() == []


def run_server(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Start `exai-mcp` with stdin at EOF: a valid config serves, sees EOF, and exits."""
    full = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "EXAI_STATE_DB": ":memory:", **env}
    return subprocess.run(
        [sys.executable, "-m", "exai_mcp"],
        env=full,
        cwd=tmp_path,
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_misordered_timeouts_refuse_to_start_naming_each_variable(tmp_path: Path) -> None:
    proc = run_server(
        {
            "WORKFLOW_TOOL_TIMEOUT_SECS": "60",
            "KIMI_TIMEOUT_SECS": "90",
            "EXPERT_ANALYSIS_TIMEOUT_SECS": "61",
            "EXAI_CLIENT_TIMEOUT_SECS": "80",
        },
        tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    err = proc.stderr
    assert "KIMI_TIMEOUT_SECS=90 is above WORKFLOW_TOOL_TIMEOUT_SECS=60" in err
    assert "EXPERT_ANALYSIS_TIMEOUT_SECS=61" in err
    assert "EXAI_CLIENT_TIMEOUT_SECS=80 is below the server deadline 90 s" in err
    assert "GLM_TIMEOUT_SECS" not in err  # not set, so not at fault


@pytest.mark.parametrize("value", ["0", "3601", "-5"])
def test_tool_timeout_outside_its_range_refuses_to_start(tmp_path: Path, value: str) -> None:
    proc = run_server({"WORKFLOW_TOOL_TIMEOUT_SECS": value}, tmp_path)
    assert proc.returncode == 2
    assert f"WORKFLOW_TOOL_TIMEOUT_SECS={value} is outside the allowed range" in proc.stderr
    assert "1..3600" in proc.stderr


def test_non_numeric_timeout_refuses_to_start_naming_the_variable(tmp_path: Path) -> None:
    proc = run_server({"WORKFLOW_TOOL_TIMEOUT_SECS": "soon"}, tmp_path)
    assert proc.returncode == 2
    assert "WORKFLOW_TOOL_TIMEOUT_SECS='soon'" in proc.stderr


def test_client_timeout_between_deadline_and_recommendation_starts_with_a_warning(
    tmp_path: Path,
) -> None:
    proc = run_server(
        {"WORKFLOW_TOOL_TIMEOUT_SECS": "3", "EXAI_CLIENT_TIMEOUT_SECS": "6"}, tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr and "EXAI_CLIENT_TIMEOUT_SECS=6" in proc.stderr
    assert "ceil(2.5 x 3) = 8" in proc.stderr


def test_valid_hierarchy_is_logged_in_one_line_on_stderr(tmp_path: Path) -> None:
    proc = run_server({"WORKFLOW_TOOL_TIMEOUT_SECS": "3"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "timeouts:" in line]
    assert len(lines) == 1
    assert "server_deadline=5s (1.67x)" in lines[0] and "client_minimum=8s (2.67x)" in lines[0]
    assert proc.stdout == ""


async def test_a_hanging_provider_ends_the_call_with_a_timeout_before_the_server_deadline(
    fake: FakeProvider, tmp_path: Path
) -> None:
    # Tool budget 0.6 s, server deadline ceil(0.9) = 1 s; the provider never answers.
    settings = settings_for(fake, tmp_path, WORKFLOW_TOOL_TIMEOUT_SECS=0.6)
    fake.enqueue(Reply(hang=True), Reply(hang=True), Reply(hang=True))
    async with in_process_client(settings) as client:
        started = time.monotonic()
        result = await client.call_tool("analyze", {"text": "hang"})
        elapsed = time.monotonic() - started

    assert result.is_error
    text = result.content[0].text
    assert text.startswith("kimi:kimi-k2-0905-preview timed out") or "did not finish within" in text
    assert elapsed < settings.timeouts().server_deadline
    assert fake.chat_count == 1  # no budget left for a second attempt
    await fake.wait_for_disconnects(1)  # the abandoned attempt's connection was closed


def test_a_nested_budget_moves_with_the_deadline_it_was_cut_from() -> None:
    from exai_mcp.middleware.deadline import Deadline

    deadline = Deadline.after(10)
    budget = deadline.within(4)
    assert 3.9 < budget.remaining() <= 4
    deadline.extend_to(deadline.at + 5)
    assert 8.9 < budget.remaining() <= 9  # still 6 s before the end of its parent
    deadline.extend_to(deadline.at - 100)  # never earlier
    assert 8.9 < budget.remaining() <= 9
    assert Deadline.after(1).within(5).remaining() <= 1  # never past its parent
