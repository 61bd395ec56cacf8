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


def assert_installs_from_a_checkout(command: list[str]) -> None:
    """exai-mcp is not on PyPI: `--from exai-mcp` would fetch whatever has that name there."""
    source = command[command.index("--from") + 1]
    assert "/" in source, source


def test_the_systemd_user_unit_parses_and_serves_http_with_a_drain() -> None:
    unit = unit_sections((DEPLOY / "systemd" / "exai-mcp.service").read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    command = shlex.split(service["ExecStart"][0])
    assert command[-3:] == ["exai-mcp", "serve", "--http"]
    assert_installs_from_a_checkout(command)
    assert service["KillSignal"] == ["SIGTERM"]
    assert int(service["TimeoutStopSec"][0]) > 30  # longer than EXAI_SHUTDOWN_GRACE_SECS
    assert unit["Install"]["WantedBy"] == ["default.target"]


def test_the_launchd_agent_parses_and_serves_http_without_a_real_key() -> None:
    with (DEPLOY / "launchd" / "ai.exai-mcp.plist").open("rb") as handle:
        agent = plistlib.load(handle)
    assert agent["Label"] == "ai.exai-mcp"
    assert agent["ProgramArguments"][-3:] == ["exai-mcp", "serve", "--http"]
    assert_installs_from_a_checkout(agent["ProgramArguments"])
    assert agent["ExitTimeOut"] > 30
    assert all(v.startswith("your-") for v in agent["EnvironmentVariables"].values())


def test_the_compose_example_runs_two_servers_on_one_redis_without_a_password_in_it() -> None:
    import yaml

    text = (DEPLOY / "compose" / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    servers = {name: s for name, s in services.items() if "exai-mcp" in s.get("command", [])}
    assert "redis" in services and len(servers) == 2
    assert "--save" in services["redis"]["command"]  # no persistence, as the README says
    urls = {s["environment"]["EXAI_REDIS_URL"] for s in servers.values()}
    prefixes = {s["environment"]["EXAI_REDIS_PREFIX"] for s in servers.values()}
    assert len(urls) == 1 and len(prefixes) == 1  # one Redis, one namespace
    (url,) = urls
    assert url.startswith("redis://") and "@redis:6379" in url and "${REDIS_PASSWORD}" in url
    ports = [port for s in servers.values() for port in s["ports"]]
    assert len(set(ports)) == 2
    for server in servers.values():
        command = server["command"]
        assert command[command.index("exai-mcp") :][:3] == ["exai-mcp", "serve", "--http"]
        # A non-loopback bind needs a token (the server refuses to start without one).
        assert server["environment"]["EXAI_HTTP_TOKEN"].startswith("${")
