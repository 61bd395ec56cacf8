"""The service files in deploy/ parse, and start the HTTP server the way the README says."""

from __future__ import annotations

import plistlib
import shlex
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as systemd reads it: sections of keys, a key may repeat; no stray lines."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and key.strip(), f"line {number}: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_systemd_user_unit_parses_and_serves_http_with_a_drain() -> None:
    unit = unit_sections((DEPLOY / "systemd" / "exai-mcp.service").read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    command = shlex.split(service["ExecStart"][0])
    assert command[-3:] == ["exai-mcp", "serve", "--http"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert int(service["TimeoutStopSec"][0]) > 30  # longer than EXAI_SHUTDOWN_GRACE_SECS
    assert unit["Install"]["WantedBy"] == ["default.target"]


def test_the_launchd_agent_parses_and_serves_http_without_a_real_key() -> None:
    with (DEPLOY / "launchd" / "ai.exai-mcp.plist").open("rb") as handle:
        agent = plistlib.load(handle)
    assert agent["Label"] == "ai.exai-mcp"
    assert agent["ProgramArguments"][-3:] == ["exai-mcp", "serve", "--http"]
    assert agent["ExitTimeOut"] > 30
    assert all(v.startswith("your-") for v in agent["EnvironmentVariables"].values())
