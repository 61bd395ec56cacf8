"""The `exai-mcp` command: serve on stdio (the default), or `doctor` to check a set-up."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterable

import anyio

from exai_mcp import __version__
from exai_mcp.config import Settings, load_settings
from exai_mcp.errors import ConfigError
from exai_mcp.redact import install_log_redaction

EXIT_CONFIG = 2


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """Every log line to stderr (stdout carries JSON-RPC only), with the API keys masked."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "mcp"):
        if logging.getLogger(noisy).level == logging.NOTSET:
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    install_log_redaction(secrets)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="exai-mcp",
        description="MCP server (stdio) giving AI assistants an expert second opinion from "
        "Kimi and GLM models. Configure with environment variables or a .env file; see README.",
    )
    p.add_argument("--version", action="version", version=f"exai-mcp {__version__}")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve MCP on stdio (the default)")
    doctor = sub.add_parser(
        "doctor",
        help="check the configuration and the providers, and print client set-up snippets",
    )
    doctor.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECS",
        help="seconds allowed for each provider check (default 5)",
    )
    return p


def load_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        configure_logging("INFO")
        print(f"exai-mcp: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "doctor":
        from exai_mcp.doctor import main as doctor

        raise SystemExit(doctor(check_timeout=args.timeout))
    settings = load_or_exit()
    configure_logging(
        settings.log_level,
        secrets=(
            p.api_key.get_secret_value() for p in settings.configured_providers() if p.api_key
        ),
    )
    log = logging.getLogger("exai_mcp")
    timeouts = settings.timeouts()
    for warning in [*settings.warnings(), *timeouts.warnings()]:
        log.warning("%s", warning)
    log.info("%s", timeouts.describe())
    from exai_mcp.transports.stdio import serve_stdio

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve_stdio, settings)


if __name__ == "__main__":
    main()
