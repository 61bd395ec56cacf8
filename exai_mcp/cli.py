"""The `exai-mcp` command: serve on stdio (the default), or `doctor` to check a set-up."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio

from exai_mcp import __version__
from exai_mcp.config import Settings, load_settings
from exai_mcp.errors import ConfigError, StoreUnusable
from exai_mcp.redact import install_log_redaction

if TYPE_CHECKING:
    from exai_mcp.store.threads import ThreadStore

EXIT_CONFIG = 2
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, secrets: Iterable[str] = (), log_format: str = "text") -> None:
    """Every log line to stderr (stdout carries JSON-RPC only), with the API keys masked;
    `log_format="json"`: one JSON object per line (EXAI_LOG_FORMAT)."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=TEXT_FORMAT)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "mcp"):
        if logging.getLogger(noisy).level == logging.NOTSET:
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    redacting = install_log_redaction(secrets)
    from exai_mcp.observability.logs import JsonLines, TextLines

    for handler in logging.getLogger().handlers:
        handler.setFormatter(
            JsonLines(redacting.redactor) if log_format == "json" else TextLines(TEXT_FORMAT)
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="exai-mcp",
        description="MCP server (stdio) giving AI assistants an expert second opinion from "
        "Kimi and GLM models. Configure with environment variables or a .env file; see README.",
    )
    p.add_argument("--version", action="version", version=f"exai-mcp {__version__}")
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve MCP on stdio (the default), or on HTTP")
    serve.add_argument(
        "--http",
        action="store_true",
        help="serve MCP streamable HTTP at /mcp plus a REST API (/api/v1/execute, "
        "/api/v1/tools, /health) to every client from one process",
    )
    serve.add_argument(
        "--host", help="address to bind with --http (default EXAI_HTTP_HOST, 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=_port,
        help="port to bind with --http (default EXAI_HTTP_PORT, 8079; 0: any)",
    )
    serve.add_argument(
        "--idle-exit",
        type=_seconds(allow_zero=True),
        metavar="SECS",
        help="with --http: exit after SECS with no call and no open request (what a daemon "
        "started by EXAI_DAEMON=spawn runs with; default: never)",
    )
    doctor = sub.add_parser(
        "doctor",
        help="check the configuration and the providers, and print client set-up snippets",
    )
    doctor.add_argument(
        "--timeout",
        type=_seconds(allow_zero=False),
        default=5.0,
        metavar="SECS",
        help="seconds allowed for each provider check (default 5)",
    )
    return p


def _port(text: str) -> int:
    """A port for argparse: what EXAI_HTTP_PORT allows, refused with the same clarity."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def _seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """Seconds for argparse: a finite number, above 0 (or 0 too, when it means 'never')."""
    rule = "a finite number >= 0; 0 means never" if allow_zero else "a finite number > 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds ({rule})")
        return value

    return parse


def load_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        configure_logging("INFO")
        print(f"exai-mcp: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def redis_password(settings: Settings) -> list[str]:
    """The password in EXAI_REDIS_URL, if any, for the log redaction."""
    if settings.redis_url is None:
        return []
    password = urlsplit(settings.redis_url.get_secret_value()).password
    return [password] if password else []


def open_store_or_exit(settings: Settings) -> ThreadStore:
    """Open the thread store before anything is served, and before the server is imported.

    A file that cannot serve (not SQLite, another program's, read-only, locked, ...) is one
    line naming EXAI_STATE_DB and exit status 2, instead of a server that never answers.
    """
    from exai_mcp.shared import thread_store
    from exai_mcp.store.threads import ThreadStore, default_db_path

    try:
        local = ThreadStore(
            settings.state_db or default_db_path(),
            ttl_hours=settings.thread_ttl_hours,
            max_turns=settings.max_thread_turns,
        )
        return thread_store(settings, local)  # threads in Redis when EXAI_REDIS_URL is set
    except StoreUnusable as exc:
        print(f"exai-mcp: cannot open the thread store: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "doctor":
        from exai_mcp.doctor import main as doctor

        raise SystemExit(doctor(check_timeout=args.timeout))
    settings = load_or_exit()
    configure_logging(
        settings.log_level,
        secrets=[
            *(p.api_key.get_secret_value() for p in settings.configured_providers() if p.api_key),
            *([settings.http_token.get_secret_value()] if settings.http_token else []),
            *redis_password(settings),  # never logged anyway; masked should a library print it
        ],
        log_format=settings.log_format,
    )
    log = logging.getLogger("exai_mcp")
    timeouts = settings.timeouts()
    for warning in [*settings.warnings(), *timeouts.warnings()]:
        log.warning("%s", warning)
    log.info("%s", timeouts.describe())
    if getattr(args, "http", False):
        serve_http_or_exit(settings, host=args.host, port=args.port, idle_exit=args.idle_exit)
        return
    if any(getattr(args, name, None) is not None for name in ("host", "port", "idle_exit")):
        print("exai-mcp: --host, --port and --idle-exit need --http", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    if settings.daemon != "off" and serve_attached(settings):
        return
    store = open_store_or_exit(settings)
    from exai_mcp.transports.stdio import serve_stdio

    try:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(serve_stdio, settings, store)
    finally:
        store.close()


def serve_attached(settings: Settings) -> bool:
    """EXAI_DAEMON: serve this stdio session through the daemon; False to serve in-process."""
    from exai_mcp.transports.attach import choose_and_serve

    with contextlib.suppress(KeyboardInterrupt):
        return anyio.run(choose_and_serve, settings)
    return True


def serve_http_or_exit(
    settings: Settings, *, host: str | None, port: int | None, idle_exit: float | None = None
) -> None:
    """`serve --http`: refuse an unsafe bind (exit 2) before the store is even opened."""
    from exai_mcp.transports.http import refuse_to_serve, serve_http

    problem = refuse_to_serve(settings, settings.http_host if host is None else host)
    if problem is not None:
        print(f"exai-mcp: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    store = open_store_or_exit(settings)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(
                lambda: serve_http(settings, store, host=host, port=port, idle_exit=idle_exit)
            )
    except ConfigError as exc:
        print(f"exai-mcp: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    finally:
        store.close()


if __name__ == "__main__":
    main()
