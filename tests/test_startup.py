"""Starting `python -m exai_mcp` as a client does: a bad setting stops it with exit status 2 and
one stderr line naming the variable; a suspicious one is a warning on stderr, and it serves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_provider import FakeProvider
from mcp import Client

from tests.conftest import stdio_params

START_WAIT = 30.0  # seconds; with stdin closed the server reads EOF and exits at once
EXIT_CONFIG = 2


def start(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the server with stdin closed: it validates its settings, starts, and exits on EOF."""
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "EXAI_STATE_DB": ":memory:",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "exai_mcp", *args],
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_WAIT,
        check=False,
    )


def test_unknown_log_level_exits_2_naming_the_variable_and_the_allowed_levels(
    tmp_path: Path,
) -> None:
    run = start({"EXAI_LOG_LEVEL": "verbose"}, tmp_path)

    assert run.returncode == EXIT_CONFIG, run.stderr
    assert "EXAI_LOG_LEVEL='verbose'" in run.stderr
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""  # stdout is the protocol channel


def test_log_level_in_lower_case_is_accepted(tmp_path: Path) -> None:
    run = start({"EXAI_LOG_LEVEL": "debug"}, tmp_path)

    assert run.returncode == 0, run.stderr
    assert " DEBUG " in run.stderr


def test_a_bad_number_exits_2_naming_the_variable(tmp_path: Path) -> None:
    run = start({"EXAI_MAX_INFLIGHT": "0"}, tmp_path)

    assert run.returncode == EXIT_CONFIG, run.stderr
    assert "EXAI_MAX_INFLIGHT='0'" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("WORKFLOW_TOOL_TIMEOUT_SECS", "inf", "Input should be a finite number"),
        ("KIMI_TIMEOUT_SECS", "nan", "Input should be a finite number"),
        ("EXAI_DEFAULT_MODEL", "bogus", "is not a known model. Use 'auto', one of"),
    ],
)
def test_a_value_no_call_could_use_stops_start_up_naming_the_variable(
    tmp_path: Path, variable: str, value: str, problem: str
) -> None:
    run = start({variable: value}, tmp_path)

    assert run.returncode == EXIT_CONFIG, run.stderr
    assert f"{variable}={value!r}: {problem}" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "url", ["redis://:pw-SECRET@127.0.0.1:notaport", "redis://127.0.0.1:99999", "redis://[::1"]
)
def test_a_malformed_redis_url_stops_start_up_without_showing_it(tmp_path: Path, url: str) -> None:
    run = start({"EXAI_REDIS_URL": url}, tmp_path)

    assert run.returncode == EXIT_CONFIG, run.stderr
    assert "EXAI_REDIS_URL=(hidden): is not a valid URL" in run.stderr
    assert "SECRET" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("serve", "--http", "--port", "99999"), "argument --port: 99999 is not a port number"),
        (("serve", "--http", "--idle-exit", "nan"), "argument --idle-exit: 'nan' is not a number"),
        (("serve", "--http", "--idle-exit", "-5"), "argument --idle-exit: '-5' is not a number"),
        (("doctor", "--timeout", "0"), "argument --timeout: '0' is not a number of seconds"),
    ],
)
def test_command_line_values_are_checked_like_their_variables(
    tmp_path: Path, args: tuple[str, ...], problem: str
) -> None:
    run = start({}, tmp_path, *args)

    assert run.returncode == EXIT_CONFIG, run.stderr
    assert problem in run.stderr and "Traceback" not in run.stderr


def test_allowed_root_that_does_not_exist_is_warned_about_and_the_server_starts(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-project"
    run = start({"EXAI_ALLOWED_ROOTS": f"{tmp_path}{os.pathsep}{missing}"}, tmp_path)

    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if " WARNING " in line]
    assert any("EXAI_ALLOWED_ROOTS" in line and str(missing) in line for line in warnings), (
        run.stderr
    )
    assert not any(f"{tmp_path}," in line for line in warnings)  # the existing root is fine


def test_placeholder_key_is_warned_about_naming_the_variable(tmp_path: Path) -> None:
    run = start({"KIMI_API_KEY": "your-kimi-api-key"}, tmp_path)

    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if " WARNING " in line]
    assert any("KIMI_API_KEY" in line and "placeholder" in line for line in warnings), run.stderr


def test_key_warning_names_the_variable_used_and_never_prints_the_key(tmp_path: Path) -> None:
    key = "sk-abc123 def456"  # a real key pasted with a space in it
    run = start({"ZHIPUAI_API_KEY": key}, tmp_path)

    assert run.returncode == 0, run.stderr
    assert "ZHIPUAI_API_KEY contains whitespace" in run.stderr
    assert "sk-abc123" not in run.stderr and "def456" not in run.stderr


def test_a_real_looking_key_and_existing_roots_start_without_warnings(tmp_path: Path) -> None:
    run = start(
        {"KIMI_API_KEY": "sk-3f9a8b7c6d5e4f", "EXAI_ALLOWED_ROOTS": str(tmp_path)}, tmp_path
    )

    assert run.returncode == 0, run.stderr
    assert " WARNING " not in run.stderr


async def test_rejected_key_error_names_the_variable_the_key_came_from(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.require_key = "the-right-key"
    env = {
        "MOONSHOT_API_KEY": "a-wrong-key-789",
        "KIMI_BASE_URL": fake.base_url("/v1"),
        "EXAI_STATE_DB": str(tmp_path / "state.sqlite3"),
        "EXAI_ALLOWED_ROOTS": str(tmp_path),
    }
    async with Client(stdio_params(env)) as client:
        result = await client.call_tool("analyze", {"text": "Is this design sound?"})

    assert result.is_error
    text = result.content[0].text
    assert "rejected the API key in MOONSHOT_API_KEY" in text, text
    assert "KIMI_API_KEY" not in text
    assert "a-wrong-key-789" not in text


def test_logging_as_the_server_sets_it_up_masks_every_api_key(tmp_path: Path) -> None:
    key = "sk-live-0123456789abcdefghij"
    script = (
        "import logging\n"
        "from exai_mcp.cli import configure_logging\n"
        f"configure_logging('INFO', secrets=[{key!r}])\n"
        f"logging.getLogger('openai.any.child').warning('echoed: Bearer %s', {key!r})\n"
        f"logging.getLogger('exai_mcp').info('cut: %s', {key[:12]!r})\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=START_WAIT,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "echoed: Bearer ***" in run.stderr and "cut: ***" in run.stderr
    assert key[:8] not in run.stderr
