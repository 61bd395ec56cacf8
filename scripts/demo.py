"""The main job, end to end, without any API key: `uv run scripts/demo.py`.

Starts the bundled fake OpenAI-compatible provider (scripts/fake_provider.py) on 127.0.0.1 in
this process, spawns the real exai-mcp server (`python -m exai_mcp`) as a subprocess, talks
to it over stdio with the official `mcp` client, and shows what an assistant would get:

1. the tools the server lists;
2-3. `analyze` answered by a Kimi model and by a GLM model, with the progress received;
4. the same call again, answered from the result cache;
5. 20 identical concurrent calls, which reach the provider once (single-flight);
6. 20 distinct concurrent calls at 500 ms provider latency, which take about 0.5 s (with the
   concurrency limits raised above their defaults, which the demo says);
7. the `status` tool's summary;
8. two more windows, each a stdio `exai-mcp` with EXAI_DAEMON=spawn: the first starts one
   shared `exai-mcp serve --http`, both attach to it, and the same question asked in both at
   once reaches the provider once. The demo stops that daemon at the end.

Exits 0 when every step worked, 1 with a message saying what failed otherwise. The server's
own log (stderr) goes to a temporary file, printed only when something fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, TextIO

import httpx2
from fake_provider import FakeProvider
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

LATENCY = 0.5  # seconds the fake provider "thinks" before answering
CHUNK_DELAY = 0.05  # seconds between streamed chunks in steps 2-3, so progress shows
CONCURRENT = 20
DEMO_TIMEOUT = 90.0  # seconds for the whole demo, whatever happens
CALL_TIMEOUT = 30.0  # seconds for one tool call
# The defaults (8 global, 8 per client, 6 for Kimi) would run step 6 in waves.
RAISED_LIMITS = {
    "EXAI_MAX_INFLIGHT": str(CONCURRENT),
    "EXAI_CLIENT_MAX_INFLIGHT": str(CONCURRENT),
    "EXAI_KIMI_MAX_INFLIGHT": str(CONCURRENT),
}
KIMI_MODEL, GLM_MODEL = "kimi-k2", "glm-4.6"
QUESTION = (
    "Our MCP server calls the model provider with a synchronous HTTP client inside an async "
    "handler. Is that a problem under concurrent load, and what should we change?"
)


class DemoError(Exception):
    """A step did not do what it should."""


def server_params(fake: FakeProvider, tmp: Path, **extra: str) -> StdioServerParameters:
    """`python -m exai_mcp` with an explicit environment: the stdio client forwards only a
    few variables (HOME, PATH, ...), so everything the server needs is passed here."""
    env = {
        "KIMI_API_KEY": "demo-kimi-key",  # any key works with the fake provider
        "KIMI_BASE_URL": fake.base_url("/v1"),  # Moonshot's path layout
        "GLM_API_KEY": "demo-glm-key",
        "GLM_BASE_URL": fake.base_url("/api/paas/v4"),  # Zhipu's path layout
        "EXAI_STATE_DB": str(tmp / "state.sqlite3"),
        "EXAI_ALLOWED_ROOTS": str(tmp),
        # Raised above their defaults so step 6's calls all run at once; step 6 says so.
        **RAISED_LIMITS,
        "EXAI_LOG_LEVEL": "INFO",  # goes to the log file, not to this screen
        **extra,
    }
    # cwd=tmp: a .env file in the checkout cannot change what the demo shows.
    return StdioServerParameters(
        command=sys.executable, args=["-m", "exai_mcp"], env=env, cwd=str(tmp)
    )


def default_limit(variable: str) -> int:
    """The default of a limit variable, as the server's own settings define it."""
    from exai_mcp.config import Settings

    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if variable in getattr(alias, "choices", ()):
            return int(Settings.model_fields[name].default)
    raise KeyError(variable)


def say(text: str = "", indent: int = 0) -> None:
    print(textwrap.indent(text, " " * indent) if text else "", flush=True)


def heading(n: int, title: str) -> None:
    say()
    say(f"{n}. {title}")


def wrap(text: str, indent: int, first: str = "") -> str:
    return textwrap.fill(
        text, width=100, initial_indent=" " * indent + first, subsequent_indent=" " * indent
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.2f} ms"


async def analyze(
    client: Client, args: dict[str, Any], progress: list[tuple[float, str]] | None = None
) -> tuple[dict[str, Any], float]:
    """One `analyze` call; its structured output and round-trip time. Raises on error."""
    started = time.perf_counter()

    async def on_progress(_done: float, _total: float | None, message: str | None) -> None:
        if progress is not None and message:
            progress.append((time.perf_counter() - started, message))

    result = await client.call_tool(
        "analyze", args, progress_callback=on_progress if progress is not None else None
    )
    elapsed = time.perf_counter() - started
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise DemoError(f"analyze {args.get('model', '')} returned an error: {text}")
    if not isinstance(result.structured_content, dict):
        raise DemoError("analyze returned no structured content")
    return result.structured_content, elapsed


def show_answer(out: dict[str, Any], elapsed: float, progress: list[tuple[float, str]]) -> None:
    for at, message in progress:
        say(f"progress +{at:.2f} s  {message}", 3)
    say(wrap(out["analysis"], 12, "").replace(" " * 12, "   answer:  ", 1))
    usage = out["usage"]
    say(f"model:   {out['provider']} / {out['model']}", 3)
    say(
        f"tokens:  {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion   "
        f"duration: {out['duration_ms']} ms expert call, {ms(elapsed)} round trip",
        3,
    )


async def demo(errlog: TextIO, tmp: Path) -> None:
    async with FakeProvider(latency=LATENCY, chunk_delay=CHUNK_DELAY) as fake:
        say(f"fake provider on {fake.url} (latency {ms(LATENCY)}); starting python -m exai_mcp")
        started = time.perf_counter()
        async with Client(
            stdio_client(server_params(fake, tmp), errlog=errlog),
            read_timeout_seconds=CALL_TIMEOUT,
        ) as client:
            info = client.server_info
            name = f"{info.name} {info.version}" if info else "exai-mcp"
            say(f"connected to {name} over stdio in {ms(time.perf_counter() - started)}")

            heading(1, "Tools")
            tools = (await client.list_tools()).tools
            width = max(len(t.name) for t in tools) + 2
            for tool in tools:
                summary = (tool.description or "").split(". ")[0].rstrip(".")
                lead = "   " + tool.name.ljust(width)
                say(
                    textwrap.fill(
                        summary, 100, initial_indent=lead, subsequent_indent=" " * len(lead)
                    )
                )
            missing = {"analyze", "status"} - {t.name for t in tools}
            if missing:
                raise DemoError(f"the server does not list {', '.join(sorted(missing))}")

            for n, model, provider in ((2, KIMI_MODEL, "kimi"), (3, GLM_MODEL, "glm")):
                heading(n, f"analyze with a {provider.upper()} model (model={model!r})")
                progress: list[tuple[float, str]] = []
                out, elapsed = await analyze(client, {"text": QUESTION, "model": model}, progress)
                show_answer(out, elapsed, progress)
                if out["provider"] != provider:
                    raise DemoError(f"model={model} was answered by {out['provider']}")
                if out["cached"]:
                    raise DemoError("the first call was answered from the cache")

            heading(4, "The same Kimi call again: answered from the result cache")
            before = fake.chat_count
            hits = [
                await analyze(client, {"text": QUESTION, "model": KIMI_MODEL}) for _ in range(5)
            ]
            out, _ = hits[0]
            best = min(elapsed for _, elapsed in hits)
            new_requests = fake.chat_count - before
            say(f"cached: {str(out['cached']).lower()}   new provider requests: {new_requests}", 3)
            say(
                f"round trip: {ms(best)} (best of {len(hits)}), client -> server -> client over "
                "stdio: the server's own share is smaller still",
                3,
            )
            if not all(o["cached"] for o, _ in hits) or new_requests:
                raise DemoError("the repeated call was not served from the cache")

            fake.chunk_delay = 0.0  # from here on, only the provider latency counts
            heading(5, f"{CONCURRENT} identical calls at once (a new question)")
            before = fake.chat_count
            args = {"text": "Review this again, please: " + QUESTION, "model": KIMI_MODEL}
            started = time.perf_counter()
            outs = await asyncio.gather(*(analyze(client, args) for _ in range(CONCURRENT)))
            wall = time.perf_counter() - started
            requests = fake.chat_count - before
            answers = {o["analysis"] for o, _ in outs}
            say(
                f"{len(outs)} answers, {'all identical' if len(answers) == 1 else 'DIFFERENT'}; "
                f"provider requests: {requests}; wall time {wall:.2f} s",
                3,
            )
            if requests != 1 or len(answers) != 1:
                raise DemoError(
                    f"{CONCURRENT} identical calls made {requests} provider requests (expected 1)"
                )

            heading(6, f"{CONCURRENT} different calls at once, {ms(LATENCY)} provider latency")
            say(
                "this demo raised "
                + ", ".join(
                    f"{name} to {value} (default {default_limit(name)})"
                    for name, value in RAISED_LIMITS.items()
                )
                + " so they all run at once; with the defaults they would run in waves: "
                "the limits at work",
                3,
            )
            fake.reset()
            started = time.perf_counter()
            calls = [
                analyze(client, {"text": f"Question {i}: {QUESTION}", "model": KIMI_MODEL})
                for i in range(CONCURRENT)
            ]
            outs = await asyncio.gather(*calls)
            wall = time.perf_counter() - started
            say(
                f"wall time {wall:.2f} s for {len(outs)} answers ({fake.chat_count} provider "
                f"requests, up to {fake.max_active} at once)",
                3,
            )
            say(
                f"a server that blocks its event loop on the provider needs about "
                f"{CONCURRENT * LATENCY:.0f} s (scripts/bench.py measures it)",
                3,
            )
            if fake.chat_count != CONCURRENT:
                raise DemoError(f"expected {CONCURRENT} provider requests, saw {fake.chat_count}")
            if wall > CONCURRENT * LATENCY / 2:
                say(f"note: slower than expected (about {LATENCY:.1f} s); is the machine busy?", 3)

            heading(7, "status")
            result = await client.call_tool("status", {})
            if result.is_error or not isinstance(result.structured_content, dict):
                raise DemoError("the status tool failed")
            show_status(result.structured_content)

        await two_windows_one_daemon(fake, tmp, errlog)


async def two_windows_one_daemon(fake: FakeProvider, tmp: Path, errlog: TextIO) -> None:
    heading(8, "Two windows attached to one daemon (EXAI_DAEMON=spawn)")
    url = f"http://127.0.0.1:{free_port()}"
    params = server_params(fake, tmp, EXAI_DAEMON="spawn", EXAI_DAEMON_URL=url)
    fake.reset()
    question = {"text": "One more, from two windows: " + QUESTION, "model": KIMI_MODEL}
    try:
        async with (
            Client(stdio_client(params, errlog=errlog), read_timeout_seconds=CALL_TIMEOUT) as one,
            Client(stdio_client(params, errlog=errlog), read_timeout_seconds=CALL_TIMEOUT) as two,
        ):
            started = time.perf_counter()
            (a, _), (b, _) = await asyncio.gather(analyze(one, question), analyze(two, question))
            wall = time.perf_counter() - started
        daemon = httpx2.get(f"{url}/health", timeout=5).json()
    finally:
        stop_daemon(url)
    say(f"one window started exai-mcp serve --http at {url} (pid {daemon['pid']})", 3)
    say(
        f"both windows asked at once: answers {'identical' if a['analysis'] == b['analysis'] else 'DIFFERENT'}, "
        f"provider requests: {fake.chat_count}, wall time {wall:.2f} s (daemon start included)",
        3,
    )
    say("one cache, one single-flight table and one set of limits for every window", 3)
    if fake.chat_count != 1 or a["analysis"] != b["analysis"]:
        raise DemoError(f"two attached windows made {fake.chat_count} provider requests")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_daemon(url: str) -> None:
    """SIGTERM to the daemon the demo's windows started (it drains, then exits 0)."""
    try:
        pid = httpx2.get(f"{url}/health", timeout=5).json()["pid"]
    except (httpx2.HTTPError, ValueError, KeyError):
        return
    os.kill(pid, signal.SIGTERM)


def show_status(st: dict[str, Any]) -> None:
    limits = ", ".join(
        f"{name} {v['in_use']}/{v['limit']} ({v['waiting']} waiting)"
        for name, v in st["limits"].items()
    )
    cache, calls = st["cache"], st["calls"]
    say(f"in flight: {st['inflight']}   permits in use: {limits}", 3)
    say(f"cache: {cache['entries']} entries, {cache['hits']} hits, {cache['misses']} misses", 3)
    say(
        f"calls: {calls['count']} ({calls['errors']} errors, {calls['coalesced_waiters']} joined "
        f"a running call), p50 {calls['p50_ms']} ms, p95 {calls['p95_ms']} ms",
        3,
    )
    for name, p in st["providers"].items():
        if p.get("configured"):
            errors = sum(p["errors"].values())
            say(
                f"{name}: {p['requests']} requests, {p['retries']} retries, {errors} errors, "
                f"breaker {p['breaker']['state']}",
                3,
            )
    t = st["timeouts"]
    say(
        f"timeouts: tool {t['tool_secs']:g} s, server deadline {t['server_deadline_secs']} s, "
        f"client should wait at least {t['client_minimum_secs']} s",
        3,
    )
    say(f"health: {'; '.join(st['health']) or 'ok'}", 3)


def describe(exc: BaseException) -> str:
    """The innermost error, out of the task groups the SDK wraps it in."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, DemoError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def main() -> int:
    say("exai-mcp demo: the real server over stdio, against the bundled fake provider")
    say("(127.0.0.1 only, no API key needed)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="exai-demo-") as tmp_name:
        tmp = Path(tmp_name)
        log_path = tmp / "server.log"
        with log_path.open("w") as errlog:
            try:
                asyncio.run(asyncio.wait_for(demo(errlog, tmp), DEMO_TIMEOUT))
            except (Exception, KeyboardInterrupt) as exc:
                errlog.flush()
                if isinstance(exc, TimeoutError):
                    reason = f"did not finish within {DEMO_TIMEOUT:.0f} s"
                else:
                    reason = describe(exc)
                print(f"\ndemo FAILED: {reason}", file=sys.stderr)
                log = log_path.read_text(errors="replace").strip()
                if log:
                    tail = "\n".join(log.splitlines()[-30:])
                    print(f"--- server log (last lines) ---\n{tail}", file=sys.stderr)
                return 1
    say()
    say(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
