"""`exai-mcp doctor`: explain a set-up, check that it works, and print what to paste into clients.

    $ exai-mcp doctor              # the report on stdout; exit 0 when the set-up works
    $ exai-mcp doctor --timeout 3  # seconds allowed for each provider check

It reads the settings exactly as the server does (`exai_mcp.config`), but where the server
refuses to start on an invalid timeout hierarchy, doctor reports every broken rule and carries
on. Each configured provider is asked for its model list (`GET <base URL>/models`), and the
time it took or its exact error is printed. The client snippets carry the timeouts the
hierarchy needs. API keys are only ever shown as set (naming the variable that holds them) or
unset, and the snippets hold placeholders, never a key. Settings that are valid but almost
certainly wrong (a key that is still a placeholder, an EXAI_ALLOWED_ROOTS entry that does not
exist) are warnings.

Exit status: 0 when nothing is wrong, 1 when something must change (each problem is listed at
the end with what to change): no provider configured, a configured provider unreachable or
rejecting its key, or an invalid timeout hierarchy. A provider that is simply not configured
is reported, not an error, while another one works. The thread store (EXAI_STATE_DB) is opened
as the server opens it (which creates nothing new: a missing file is only checked for where it
would go), and a file the server could not use is a problem, in the same line the server prints.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit
from urllib.request import url2pathname

import anyio
from pydantic import AliasChoices, SecretStr

from exai_mcp import __version__
from exai_mcp.config import ProviderSettings, Settings, Timeouts, load_settings, named_env_file
from exai_mcp.errors import (
    AuthRejected,
    BadRequest,
    ConfigError,
    ProviderError,
    ProviderTimeout,
    StoreUnusable,
    Unreachable,
)
from exai_mcp.providers.base import Provider
from exai_mcp.providers.catalog import KNOWN_MODELS
from exai_mcp.providers.registry import (
    PROVIDERS,
    SPECS,
    create_providers,
    describe_all_key_variables,
)
from exai_mcp.redact import redact_url
from exai_mcp.store.diagnosis import check_location
from exai_mcp.store.threads import MEMORY, ThreadStore, default_db_path

DEFAULT_CHECK_TIMEOUT = 5.0
EXIT_OK = 0
EXIT_PROBLEMS = 1
GIT_SOURCE = "git+https://github.com/OWNER/exai-mcp"
INSPECTOR = "@modelcontextprotocol/inspector@0.15.0"  # the newest that runs on Node.js 20


@dataclass(slots=True)
class ProviderCheck:
    """The outcome of asking one provider for its model list."""

    name: str
    base_url: str
    seconds: float = 0.0
    models: list[str] = field(default_factory=list)
    error: ProviderError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def fatal(self) -> bool:
        """Rejected key, unreachable, or no answer: the provider cannot serve calls.

        A 404 to `/models` is not fatal: the endpoint answered, and some OpenAI-compatible
        providers serve chat completions without a model list. 429 and 5xx say the provider
        is reachable and took the key; they are usually temporary.
        """
        return isinstance(self.error, AuthRejected | Unreachable | ProviderTimeout)


class Report:
    """Lines for stdout plus the problems that make the exit status non-zero."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def heading(self, text: str) -> None:
        self.line()
        self.line(text)
        self.line("-" * len(text))

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.line(f"  PROBLEM: {text}")

    def warning(self, text: str) -> None:
        self.warnings.append(text)
        self.line(f"  warning: {text}")


def main(*, check_timeout: float = DEFAULT_CHECK_TIMEOUT, out: TextIO | None = None) -> int:
    """Run the whole report; return the exit status."""
    return anyio.run(run, check_timeout, out or sys.stdout)


async def run(check_timeout: float, out: TextIO) -> int:
    report = Report(out)
    report.line(f"exai-mcp {__version__} doctor")
    settings = load_for_report(report)
    if settings is None:
        return finish(report)
    show_configuration(report, settings)
    show_thread_store(report, settings)
    await show_redis(report, settings)
    timeouts = settings.timeouts()
    hierarchy_ok = show_timeouts(report, timeouts)
    await show_providers(report, settings, check_timeout)
    await show_daemon(report, settings)
    show_client_snippets(report, settings, timeouts, hierarchy_ok)
    return finish(report)


# ----------------------------------------------------------------------------- settings


def load_for_report(report: Report) -> Settings | None:
    """The settings the server would use, even when their timeout hierarchy is invalid."""
    try:
        # The hierarchy is checked (and every broken rule reported) by show_timeouts.
        return load_settings(check_timeouts=False)
    except ConfigError as error:
        report_unreadable(report, error)
        return None


def report_unreadable(report: Report, error: ConfigError) -> None:
    report.heading("Configuration")
    for text in str(error).splitlines():
        if text.strip():
            report.line(f"  {text}")
    details = "; ".join(t.strip().removeprefix("- ") for t in str(error).splitlines()[1:])
    report.problems.append(f"the settings cannot be read: {details or error}")


def variable_names(name: str) -> tuple[str, ...]:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (name.upper(),)


def show_configuration(report: Report, settings: Settings) -> None:
    report.heading("Configuration (environment first, then the .env file)")
    rows: list[tuple[str, str]] = []
    for name, field_info in Settings.model_fields.items():
        if field_info.exclude:
            continue  # derived, not a variable anyone sets
        variables = variable_names(name)
        value = getattr(settings, name)
        label = variables[0]
        if len(variables) > 1:
            label += f" (or {' / '.join(variables[1:])})"
        shown = describe_value(name, value, settings)
        if (
            name not in settings.model_fields_set
            and value is not None
            and not name.endswith("_api_key")
        ):
            shown += "  (default)"
        rows.append((label, shown))
    env_file = named_env_file()
    rows.append(("EXAI_ENV_FILE", env_file or f"unset (reads {Path.cwd() / '.env'} if present)"))
    width = max(len(label) for label, _ in rows)
    for label, shown in rows:
        report.line(f"  {label.ljust(width)}  {shown}")
    for text in settings.warnings():
        report.warning(text)


def describe_value(name: str, value: Any, settings: Settings) -> str:
    if name == "redis_url" and isinstance(value, SecretStr):
        return redact_url(value.get_secret_value())
    if name.endswith("_api_key"):
        return describe_key(settings.provider(name.removesuffix("_api_key")))
    if isinstance(value, SecretStr):
        return "set"
    if value is None:
        if name == "expert_timeout" or name.removesuffix("_timeout") in SPECS:
            return f"unset: follows WORKFLOW_TOOL_TIMEOUT_SECS ({_fmt(settings.tool_timeout)} s)"
        if name == "state_db":
            return f"unset: {default_db_path()}"
        return "unset"
    if name == "allowed_roots":
        roots = os.pathsep.join(str(r) for r in settings.effective_roots())
        return roots if value else f"unset: {roots or 'none (file access refused)'}"
    if isinstance(value, float):
        return _fmt(value)
    return str(value)


def describe_key(provider: ProviderSettings) -> str:
    """Whether the key is set, and in which variable; never the key."""
    if not provider.configured:
        return "unset"
    problem = provider.key_problem
    return f"set in {provider.key_variable}" + (f", but it {problem}" if problem else "")


# ----------------------------------------------------------------------------- thread store


def show_thread_store(report: Report, settings: Settings) -> None:
    """Open the store as the server would; a problem is the line the server would exit with."""
    report.heading("Thread store (EXAI_STATE_DB)")
    path = settings.state_db or str(default_db_path())
    if path == MEMORY:
        report.line("  :memory:  threads are kept by each server process and lost when it stops")
        return
    try:
        target = check_location(path)
        if not target.exists():
            report.line(f"  {target}  does not exist yet; the server creates it at start-up")
            return
        with ThreadStore(
            target, ttl_hours=settings.thread_ttl_hours, max_turns=settings.max_thread_turns
        ) as store:
            journal = store.journal_mode
        size = target.stat().st_size
    except StoreUnusable as exc:
        report.problem(str(exc))
        return
    except OSError as exc:  # the file went away between the check and the stat
        report.problem(f"EXAI_STATE_DB={path}: cannot be read ({exc.strerror or exc})")
        return
    report.line(
        f"  {target}  ok: opens and takes the write lock ({journal} mode), {size / 1024:.0f} KiB"
    )


async def show_redis(report: Report, settings: Settings) -> None:
    """With EXAI_REDIS_URL: whether Redis answers (the URL shown without its password)."""
    if settings.redis_url is None:
        return
    import redis

    report.heading("Shared state (EXAI_REDIS_URL)")
    url = settings.redis_url.get_secret_value()
    shown = redact_url(url)
    timeout = settings.redis_timeout

    def ping() -> float:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            started = time.perf_counter()
            client.ping()
            return time.perf_counter() - started
        finally:
            client.close()

    try:
        took = await anyio.to_thread.run_sync(ping)
    except (redis.RedisError, OSError, ValueError) as exc:
        # The class only: a message can quote the URL, password included.
        report.problem(
            f"EXAI_REDIS_URL={shown}: Redis does not answer ({type(exc).__name__}); the servers "
            "would each run on their own state (degraded). Check the host, port, password and "
            "TLS (rediss://), or unset EXAI_REDIS_URL"
        )
        return
    report.line(
        f"  {shown}  ok: answers in {took * 1000:.0f} ms; keys under {settings.redis_prefix!r}, "
        f"leases of {_fmt(settings.redis_lease)} s"
    )


# ----------------------------------------------------------------------------- timeouts


def show_timeouts(report: Report, t: Timeouts) -> bool:
    """Print the hierarchy and each broken rule; return whether it is valid."""
    report.heading("Timeout hierarchy (T = WORKFLOW_TOOL_TIMEOUT_SECS)")

    def follows(var: str) -> str:
        return "  (follows T)" if var in t.defaulted else ""

    rows = [
        ("tool budget T", f"{_fmt(t.tool)} s", "WORKFLOW_TOOL_TIMEOUT_SECS"),
        (
            "expert analysis",
            f"{_fmt(t.expert)} s",
            "EXPERT_ANALYSIS_TIMEOUT_SECS" + follows("EXPERT_ANALYSIS_TIMEOUT_SECS"),
        ),
        *(
            (
                f"one {spec.name} attempt",
                f"{_fmt(t.attempt[spec.name])} s",
                spec.timeout_variable + follows(spec.timeout_variable),
            )
            for spec in PROVIDERS
        ),
        ("server deadline", f"{t.server_deadline} s", "ceil(1.5 T): a request ends by then"),
        *(
            [("shim waits", f"{t.shim} s", "ceil(2 T): an attached stdio process (EXAI_DAEMON)")]
            if t.attached
            else []
        ),
        ("client must wait", f"{t.client_minimum} s", "ceil(2.5 T): set your client to this"),
        (
            "client configured",
            f"{_fmt(t.client_configured)} s" if t.client_configured is not None else "unset",
            "EXAI_CLIENT_TIMEOUT_SECS (optional: what your client waits)",
        ),
    ]
    for what, value, source in rows:
        report.line(f"  {what:<18} {value:>9}   {source}")
    problems = t.problems()
    for text in problems:
        report.problem(text)
    for text in t.warnings():
        report.warning(text)
    if not problems:
        report.line(
            f"  ok: provider attempt <= T ({_fmt(t.tool)} s) < server deadline "
            f"({t.server_deadline} s) < client ({t.client_minimum} s or more)"
        )
    return not problems


# ----------------------------------------------------------------------------- providers


async def check_provider(provider: Provider, timeout: float) -> ProviderCheck:
    check = ProviderCheck(provider.name, provider.base_url)
    started = time.perf_counter()
    try:
        # The SDK bounds the request; the outer bound also covers a stalled body.
        with anyio.fail_after(timeout + 1):
            check.models = await provider.list_models(timeout=timeout)
    except ProviderError as exc:
        check.error = exc
    except TimeoutError:
        check.error = ProviderTimeout(
            f"{provider.name} ({provider.base_url}) did not answer within {_fmt(timeout)} s",
            provider=provider.name,
        )
    finally:
        check.seconds = time.perf_counter() - started
    return check


async def check_all(providers: dict[str, Provider], timeout: float) -> dict[str, ProviderCheck]:
    results: dict[str, ProviderCheck] = {}

    async def one(name: str, provider: Provider) -> None:
        results[name] = await check_provider(provider, timeout)

    try:
        async with anyio.create_task_group() as tg:
            for name, provider in providers.items():
                tg.start_soon(one, name, provider)
    finally:
        with anyio.CancelScope(shield=True):
            for provider in providers.values():
                await provider.aclose()
    return results


async def show_providers(report: Report, settings: Settings, timeout: float) -> None:
    report.heading(f"Providers (each asked for GET <base URL>/models, {_fmt(timeout)} s allowed)")
    checks = await check_all(create_providers(settings), timeout)
    configured = [p.spec.name for p in settings.configured_providers()]
    working = 0
    for provider in settings.providers():
        spec = provider.spec
        name = spec.name
        report.line(f"  {spec.title}")
        known = [m for m in KNOWN_MODELS if m.provider == name]
        report.line(
            "    known models:  "
            + ", ".join(m.id + (f" ({', '.join(m.aliases)})" if m.aliases else "") for m in known)
        )
        if not provider.configured:
            report.line(f"    not configured: set {spec.describe_key_variables()} to use it")
            continue
        check = checks[name]
        default = provider.default_model
        known_ids = {m.id for m in known}
        note = "" if default in known_ids else f" (not in the table; reached as {name}:{default})"
        report.line(f"    key:           {describe_key(provider)}")
        report.line(f"    base URL:      {provider.base_url}  ({spec.base_url_variable})")
        report.line(f"    default model: {default}{note}  ({spec.model_variable})")
        took = f"{check.seconds * 1000:.0f} ms"
        if check.ok:
            working += 1
            served = ", ".join(check.models[:12]) + (" ..." if len(check.models) > 12 else "")
            report.line(
                f"    check:         ok in {took}; serves {len(check.models)} models: {served}"
            )
            if check.models and default not in check.models:
                report.warning(
                    f"{name}: the default model {default} is not in the list the provider "
                    f"serves; set {spec.model_variable} to one of them if calls fail"
                )
            continue
        assert check.error is not None
        if check.fatal:
            report.line(f"    check:         FAILED after {took}: {check.error}")
            others = [n for n in configured if n != name and not checks[n].fatal]
            report.problem(what_to_change(provider, check, others))
            continue
        report.line(f"    check:         answered with an error after {took}: {check.error}")
        if isinstance(check.error, BadRequest):
            working += 1  # it answered; only the model list is missing
        report.warning(
            f"{name} is reachable but its model list failed, so the key is not confirmed; if "
            f"tool calls fail too, check {spec.base_url_variable} (it must end with the API "
            f"prefix, like {spec.base_url_default})"
        )
    if not configured:
        report.problem(
            f"no model provider is configured: set {describe_all_key_variables()} in the "
            'environment the client starts exai-mcp with (the "env" block of its '
            "configuration) or in the .env file"
        )
    elif not working and not report.problems:
        report.warning("no configured provider could be confirmed working")


def what_to_change(provider: ProviderSettings, check: ProviderCheck, others: list[str]) -> str:
    """What to do about a provider that cannot serve calls; `others` are the working ones."""
    spec = provider.spec
    name = spec.name
    error = check.error
    if isinstance(error, AuthRejected):
        fallback = (
            f"until then, model=auto skips {name} and uses {' or '.join(others)}"
            if others
            else "until then every call fails: no other provider is configured and working"
        )
        return (
            f"{name} rejected its key: put a valid key in {provider.key_variable}; keys belong "
            f"to one platform, so {provider.base_url} refuses a key made for another region's "
            f"endpoint; {fallback}"
        )
    if isinstance(error, Unreachable):
        return (
            f"{name} is unreachable at {provider.base_url}: correct {spec.base_url_variable}, "
            "or fix the network or proxy settings (the exact error is on its check line above)"
        )
    return (
        f"{name} at {provider.base_url} did not answer in time: check "
        f"{spec.base_url_variable} and the network, or run doctor again with a longer --timeout"
    )


# ----------------------------------------------------------------------------- client snippets


def server_command() -> tuple[str, list[str], str]:
    """(command, args, note) that start this exai-mcp from a client."""
    uvx = shutil.which("uvx")
    command = uvx or "uvx"
    root = checkout_root()
    if root is not None:
        source, note = str(root), f"runs the checkout at {root}; edits are picked up"
    else:
        source, note = GIT_SOURCE, "replace OWNER with where you got exai-mcp from"
    if uvx is None:
        note += "; uvx is not on PATH here: install uv (https://docs.astral.sh/uv/)"
    return command, ["--from", source, "exai-mcp"], note


def checkout_root() -> Path | None:
    """The checkout exai-mcp runs from: beside the package (`uv run`), or the local directory
    it was installed from (`uvx --from <checkout>`, recorded in the wheel's direct_url.json)."""
    root = Path(__file__).resolve().parent.parent
    if _is_checkout(root):
        return root
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        recorded = distribution("exai-mcp").read_text("direct_url.json")
        url = json.loads(recorded or "{}").get("url", "")
    except (PackageNotFoundError, ValueError, AttributeError):
        return None
    if not url.startswith("file://"):
        return None
    source = Path(url2pathname(urlsplit(url).path))
    return source if _is_checkout(source) else None


def _is_checkout(root: Path) -> bool:
    try:
        return 'name = "exai-mcp"' in (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return False


async def show_daemon(report: Report, settings: Settings) -> None:
    """With EXAI_DAEMON set: whether the daemon answers, and what a stdio start will do."""
    if settings.daemon == "off":
        return
    from exai_mcp.transports.daemon import Daemon

    daemon = Daemon.from_settings(settings)
    report.heading(f"Daemon (EXAI_DAEMON={settings.daemon})")
    answers = await daemon.answers()
    report.line(f"  {daemon.url}: {'answers /health' if answers else 'does not answer'}")
    if answers:
        report.line("  ok: stdio starts will attach to it and share its cache and limits")
    elif settings.daemon == "auto":
        report.line("  stdio starts will serve in their own process until it runs")
    elif settings.daemon == "require":
        report.problem(
            f"every call will fail until `exai-mcp serve --http` runs at {daemon.url}, or "
            "set EXAI_DAEMON=spawn"
        )
    elif problem := daemon.spawn_problem():
        report.problem(problem)
    else:
        report.line(f"  the first stdio start will start it (log: {daemon.log_path})")


def snippet_env(settings: Settings, t: Timeouts) -> dict[str, str]:
    """Placeholders for the keys, non-default base URLs, and the timeout variables."""
    providers = settings.configured_providers() or settings.providers()
    env: dict[str, str] = {}
    for provider in providers:
        spec = provider.spec
        env[spec.key_variable] = spec.key_placeholder
        if provider.base_url != spec.base_url_default:
            env[spec.base_url_variable] = provider.base_url
    env["WORKFLOW_TOOL_TIMEOUT_SECS"] = _fmt(t.tool)
    if settings.daemon != "off":
        env["EXAI_DAEMON"] = settings.daemon
    for var, value in t.bounded():
        if var not in t.defaulted:
            env[var] = _fmt(value)
    return env


def show_client_snippets(
    report: Report, settings: Settings, t: Timeouts, hierarchy_ok: bool
) -> None:
    report.heading("Client set-up")
    if not hierarchy_ok:
        report.line("  skipped: fix the timeout hierarchy first (see PROBLEM lines above)")
        return
    command, args, note = server_command()
    env = snippet_env(settings, t)
    client_ms = t.client_minimum * 1000
    report.line(f"  Server command: {shlex.join([command, *args])}")
    report.line(f"  ({note})")
    report.line("  Replace your-...-api-key with your keys; drop a provider you do not use.")
    report.line(
        f"  Every client must wait at least {t.client_minimum} s ({client_ms} ms) for a tool call."
    )

    desktop = {"mcpServers": {"exai-mcp": {"command": command, "args": args, "env": env}}}
    report.line()
    report.line("  Claude Desktop: add to claude_desktop_config.json (Settings > Developer > Edit")
    report.line("  Config), then restart it. Cursor: the same block in ~/.cursor/mcp.json or")
    report.line(
        "  <project>/.cursor/mcp.json. Neither documents a tool-timeout setting: the server"
    )
    report.line("  sends progress while it works; if long calls are cut off, lower")
    report.line("  WORKFLOW_TOOL_TIMEOUT_SECS.")
    for text in json.dumps(desktop, indent=2).splitlines():
        report.line(f"    {text}")

    code_env = {**env, "EXAI_CLIENT_TIMEOUT_SECS": str(t.client_minimum)}
    parts = ["claude", "mcp", "add", "exai-mcp"]
    for key, value in code_env.items():
        parts += ["-e", f"{key}={value}"]
    parts += ["--", "uvx", *args]
    report.line()
    report.line("  Claude Code: register the server, and start claude with MCP_TOOL_TIMEOUT (ms)")
    report.line('  (or put it in ~/.claude/settings.json under "env"):')
    report.line(f"    {shlex.join(parts)}")
    report.line(f"    export MCP_TOOL_TIMEOUT={client_ms}")

    inspector = ["npx", "-y", INSPECTOR]
    for key, value in env.items():
        inspector += ["-e", f"{key}={value}"]
    inspector += ["--", command, *args]
    report.line()
    report.line("  MCP Inspector (web UI): in Configuration set Request Timeout and Maximum Total")
    report.line(
        f"  Timeout to {client_ms} ms. Its --cli mode (0.15) waits 60 s at most, which fits"
    )
    report.line("  WORKFLOW_TOOL_TIMEOUT_SECS=24 or less.")
    report.line(f"    {shlex.join(inspector)}")


# ----------------------------------------------------------------------------- result


def finish(report: Report) -> int:
    report.heading("Result")
    if not report.problems:
        extra = f" ({len(report.warnings)} warning(s) above)" if report.warnings else ""
        report.line(f"  OK: exai-mcp is ready to serve{extra}.")
        return EXIT_OK
    report.line(f"  {len(report.problems)} problem(s) to fix:")
    for text in report.problems:
        report.line(f"  - {text}")
    return EXIT_PROBLEMS


def _fmt(value: float) -> str:
    return f"{value:g}"


__all__ = ["main", "run"]
