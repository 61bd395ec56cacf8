"""`exai-mcp doctor` as a user runs it: a subprocess with an explicit environment, against the
fake provider serving from this test's event loop."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_provider import FakeProvider

from exai_mcp import doctor
from exai_mcp.store.threads import ThreadStore

DOCTOR_WAIT = 30.0  # seconds; a run takes about one second


@dataclass
class DoctorRun:
    status: int
    output: str


async def run_doctor(env: dict[str, str], cwd: Path, *args: str) -> DoctorRun:
    """Run `python -m exai_mcp doctor` asynchronously, so the fake keeps serving meanwhile."""
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        # Never the user's real store: doctor opens the file it is pointed at.
        "EXAI_STATE_DB": str(cwd / "threads.sqlite3"),
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exai_mcp",
        "doctor",
        "--timeout",
        "5",
        *args,
        env=full_env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), DOCTOR_WAIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return DoctorRun(proc.returncode, out.decode())


def closed_port_url() -> str:
    """A 127.0.0.1 URL nothing listens on: bind an ephemeral port, then release it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def test_reachable_provider_passes_and_prints_snippets_with_the_client_timeout(
    fake: FakeProvider, tmp_path: Path
) -> None:
    env = {
        "KIMI_API_KEY": "kimi-secret-key-123",
        "KIMI_BASE_URL": fake.base_url("/v1"),
        "WORKFLOW_TOOL_TIMEOUT_SECS": "60",
    }
    run = await run_doctor(env, tmp_path)

    assert run.status == 0, run.output
    assert "kimi-secret-key-123" not in run.output
    assert [r.path for r in fake.requests] == ["/v1/models"]
    assert "ok in " in run.output and "kimi-k2-0905-preview" in run.output
    # GLM is simply not configured: reported, not an error, while Kimi works.
    assert "not configured: set GLM_API_KEY" in run.output
    # Client snippets carry the client minimum ceil(2.5 x 60) = 150 s.
    assert '"mcpServers"' in run.output
    assert "claude mcp add exai-mcp" in run.output
    assert "MCP_TOOL_TIMEOUT=150000" in run.output
    # Pinned as in the README: later Inspectors do not run on Node.js 20.
    assert "npx -y @modelcontextprotocol/inspector@0.15.0 -e" in run.output
    assert "EXAI_CLIENT_TIMEOUT_SECS=150" in run.output
    assert "OK: exai-mcp is ready" in run.output


async def test_unreachable_base_url_fails_naming_the_url(
    fake: FakeProvider, tmp_path: Path
) -> None:
    dead = closed_port_url()
    env = {
        "KIMI_API_KEY": "kimi-key",
        "KIMI_BASE_URL": fake.base_url("/v1"),
        "GLM_API_KEY": "glm-key",
        "GLM_BASE_URL": dead,
    }
    run = await run_doctor(env, tmp_path)

    assert run.status != 0, run.output
    assert f"glm is unreachable at {dead}" in run.output
    assert "GLM_BASE_URL" in run.output
    assert "FAILED after" in run.output


async def test_rejected_key_fails_naming_the_variable_and_never_printing_the_key(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.require_key = "the-right-key"
    env = {"KIMI_API_KEY": "wrong-secret-789", "KIMI_BASE_URL": fake.base_url("/v1")}
    run = await run_doctor(env, tmp_path)

    assert run.status != 0, run.output
    assert "kimi rejected its key: put a valid key in KIMI_API_KEY" in run.output
    assert "HTTP 401" in run.output
    assert "wrong-secret-789" not in run.output
    assert "the-right-key" not in run.output


async def test_bad_timeout_hierarchy_fails_naming_each_variable_and_still_checks_providers(
    fake: FakeProvider, tmp_path: Path
) -> None:
    env = {
        "KIMI_API_KEY": "kimi-key",
        "KIMI_BASE_URL": fake.base_url("/v1"),
        "WORKFLOW_TOOL_TIMEOUT_SECS": "60",
        "KIMI_TIMEOUT_SECS": "120",
        "EXAI_CLIENT_TIMEOUT_SECS": "30",
    }
    run = await run_doctor(env, tmp_path)

    assert run.status != 0, run.output
    assert "KIMI_TIMEOUT_SECS=120 is above WORKFLOW_TOOL_TIMEOUT_SECS=60" in run.output
    assert "EXAI_CLIENT_TIMEOUT_SECS=30 is below the server deadline 90 s" in run.output
    assert "2 problem(s) to fix" in run.output
    assert "Traceback" not in run.output
    assert [r.path for r in fake.requests] == ["/v1/models"]
    assert "skipped: fix the timeout hierarchy first" in run.output


async def test_no_provider_fails_saying_which_variable_to_set(tmp_path: Path) -> None:
    run = await run_doctor({}, tmp_path)

    assert run.status != 0, run.output
    assert "no model provider is configured: set KIMI_API_KEY" in run.output
    assert "GLM_API_KEY" in run.output


async def test_unknown_log_level_is_reported_with_the_allowed_levels(tmp_path: Path) -> None:
    run = await run_doctor({"KIMI_API_KEY": "kimi-key", "EXAI_LOG_LEVEL": "verbose"}, tmp_path)

    assert run.status != 0, run.output
    assert "EXAI_LOG_LEVEL='verbose'" in run.output
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in run.output
    assert "Traceback" not in run.output


async def test_allowed_root_that_does_not_exist_is_shown_as_a_warning(
    fake: FakeProvider, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-project"
    env = {
        "KIMI_API_KEY": "kimi-key",
        "KIMI_BASE_URL": fake.base_url("/v1"),
        "EXAI_ALLOWED_ROOTS": f"{tmp_path}{os.pathsep}{missing}",
    }
    run = await run_doctor(env, tmp_path)

    assert run.status == 0, run.output  # a warning, not a problem
    assert f"warning: EXAI_ALLOWED_ROOTS names {missing}, which does not exist" in run.output


async def test_placeholder_key_is_flagged_naming_the_variable_it_is_in(
    fake: FakeProvider, tmp_path: Path
) -> None:
    env = {"MOONSHOT_API_KEY": "your-kimi-api-key", "KIMI_BASE_URL": fake.base_url("/v1")}
    run = await run_doctor(env, tmp_path)

    assert "warning: MOONSHOT_API_KEY holds a placeholder" in run.output
    assert "key:           set in MOONSHOT_API_KEY, but it holds a placeholder" in run.output


async def test_rejected_key_names_the_variable_used_and_says_auto_uses_the_other_provider(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.require_key = "the-right-key"
    env = {
        "MOONSHOT_API_KEY": "wrong-secret-789",
        "KIMI_BASE_URL": fake.base_url("/v1"),
        "ZAI_API_KEY": "the-right-key",
        "GLM_BASE_URL": fake.base_url("/api/paas/v4"),
    }
    run = await run_doctor(env, tmp_path)

    assert run.status != 0, run.output
    assert "kimi rejected its key: put a valid key in MOONSHOT_API_KEY" in run.output
    assert "model=auto skips kimi and uses glm" in run.output
    assert "wrong-secret-789" not in run.output and "the-right-key" not in run.output


async def test_rejected_key_without_another_provider_says_every_call_fails(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.require_key = "the-right-key"
    env = {"GLM_API_KEY": "wrong-key", "GLM_BASE_URL": fake.base_url("/api/paas/v4")}
    run = await run_doctor(env, tmp_path)

    assert run.status != 0, run.output
    assert "glm rejected its key: put a valid key in GLM_API_KEY" in run.output
    assert "every call fails: no other provider is configured and working" in run.output


async def test_a_working_thread_store_is_reported_ok_and_a_missing_one_as_created_later(
    fake: FakeProvider, tmp_path: Path
) -> None:
    env = {"KIMI_API_KEY": "kimi-key", "KIMI_BASE_URL": fake.base_url("/v1")}
    missing = tmp_path / "state" / "threads.sqlite3"
    run = await run_doctor({**env, "EXAI_STATE_DB": str(missing)}, tmp_path)

    assert run.status == 0, run.output
    assert f"{missing}  does not exist yet; the server creates it at start-up" in run.output
    assert not missing.exists() and not missing.parent.exists()  # doctor created nothing

    ThreadStore(missing).close()
    run = await run_doctor({**env, "EXAI_STATE_DB": str(missing)}, tmp_path)

    assert run.status == 0, run.output
    assert f"{missing}  ok: opens and takes the write lock (wal mode)" in run.output


async def test_a_store_the_server_cannot_open_makes_doctor_fail_with_the_servers_line(
    fake: FakeProvider, tmp_path: Path
) -> None:
    path = tmp_path / "threads.sqlite3"
    path.write_text("not a database\n" * 100)
    env = {"KIMI_API_KEY": "kimi-key", "KIMI_BASE_URL": fake.base_url("/v1")}
    run = await run_doctor({**env, "EXAI_STATE_DB": str(path)}, tmp_path)

    assert run.status == 1, run.output
    line = (
        f"EXAI_STATE_DB={path}: not a SQLite database (file is not a database); point "
        "EXAI_STATE_DB at another file or delete this one"
    )
    assert f"PROBLEM: {line}" in run.output
    assert "1 problem(s) to fix" in run.output and f"- {line}" in run.output
    assert "Traceback" not in run.output
    assert [r.path for r in fake.requests] == ["/v1/models"]  # it still checked the rest


async def test_an_attached_set_up_says_whether_the_daemon_answers(tmp_path: Path) -> None:
    url = closed_port_url().removesuffix("/v1")
    env = {"KIMI_API_KEY": "kimi-key", "KIMI_BASE_URL": closed_port_url(), "EXAI_DAEMON_URL": url}
    required = await run_doctor({**env, "EXAI_DAEMON": "require"}, tmp_path)
    auto = await run_doctor({**env, "EXAI_DAEMON": "auto"}, tmp_path)

    assert f"{url}: does not answer" in required.output
    assert "every call will fail until `exai-mcp serve --http` runs" in required.output
    assert "shim waits" in required.output and "ceil(2 T)" in required.output
    assert "serve in their own process until it runs" in auto.output
    assert '"EXAI_DAEMON": "auto"' in auto.output  # the client snippet keeps the mode


def test_doctor_does_not_import_the_server() -> None:
    code = (
        "import sys, exai_mcp.doctor, exai_mcp.transports.daemon; "
        "print('exai_mcp.server' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=DOCTOR_WAIT
    )
    assert result.stdout.strip() == "False", result.stderr


def test_run_through_uvx_from_a_checkout_the_snippets_name_that_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`uvx --from <checkout>` runs an installed copy: the checkout is only in the wheel's
    direct_url.json, and the snippets must carry it, not a placeholder URL."""
    checkout = tmp_path / "src" / "exai-mcp"
    checkout.mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "exai-mcp"\n')

    class Installed:
        def read_text(self, name: str) -> str | None:
            assert name == "direct_url.json"
            return json.dumps({"url": checkout.as_uri(), "dir_info": {}})

    monkeypatch.setattr(doctor, "__file__", str(tmp_path / "site-packages/exai_mcp/doctor.py"))
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Installed())
    assert doctor.checkout_root() == checkout
