"""The attached stdio process (the shim): a stdio MCP server whose every call is answered by
the one `exai-mcp serve --http` of the machine, so every window shares its cache, single-flight
table and limits.

    EXAI_DAEMON=auto      attach when the daemon answers /health at start-up, else serve here
    EXAI_DAEMON=require   always attach; while the daemon is down, each call says so
    EXAI_DAEMON=spawn     always attach; start the daemon when none answers (daemon.py)

The wire to the client is the stdio adapter's (intake bound, malformed lines answered); the
wire to the daemon is the SDK's streamable HTTP client, one short-lived client per call over
one pooled HTTP connection set, so a daemon that dies takes one call down with it and never
the shim. Progress the daemon reports reaches the stdio client, a stdio cancel cancels the
daemon's request (the SDK sends `notifications/cancelled` and closes the stream), and the
shim waits at most ceil(2T): after the daemon's own deadline ceil(1.5T), before the client's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types.version import LATEST_MODERN_VERSION
from mcp_types import (
    CallToolRequest,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
)

from exai_mcp import __version__
from exai_mcp.config import Settings
from exai_mcp.errors import DaemonUnavailable, DeadlineExceeded, ExaiError, user_message
from exai_mcp.middleware.progress import SendProgress
from exai_mcp.server import (
    INSTRUCTIONS,
    SHUTTING_DOWN,
    TOOLS,
    answer_protocol_errors,
    asked_for_progress,
    error_result,
    tool_definition,
)
from exai_mcp.transports.daemon import Daemon
from exai_mcp.transports.intake import SessionIntake
from exai_mcp.transports.stdio import stdio_session

log = logging.getLogger("exai_mcp.attach")

CONNECT_TIMEOUT = 2.0  # seconds to open a connection to the daemon: it is on this machine


class _NotReached(Exception):
    """The daemon could not be connected to: the request never left, so it may be resent."""


class DaemonLink:
    """Calls forwarded to the daemon: `list_tools` and `call_tool`, each on its own client."""

    def __init__(self, daemon: Daemon, *, mode: str, shim_timeout: float, client_id: str) -> None:
        self.daemon = daemon
        self.mode = mode
        self.shim_timeout = shim_timeout
        self.client_id = client_id
        self._http = httpx2.AsyncClient(
            headers=daemon.headers(client_id),
            # No read timeout: a call's stream may be quiet for minutes; the shim timeout
            # bounds the whole call instead.
            timeout=httpx2.Timeout(None, connect=CONNECT_TIMEOUT),
            event_hooks={"response": [_raise_refusal]},
        )
        self._starting = anyio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None, send_progress: SendProgress | None
    ) -> CallToolResult:
        """The daemon's result for one call; DaemonUnavailable or DeadlineExceeded otherwise."""
        request = CallToolRequest(params=CallToolRequestParams(name=name, arguments=arguments))

        def send(client: Client) -> Any:
            return client.session.send_request(
                request, CallToolResult, progress_callback=send_progress
            )

        with anyio.move_on_after(self.shim_timeout):
            result = await self._reach(send)
            if self.mode == "spawn" and _refused_while_draining(result):
                # The daemon was exiting (idle) and never started the call: start another.
                async with self._starting:
                    await self.daemon.start()
                result = await self._reach(send)
            return result
        raise DeadlineExceeded(self._too_slow())

    async def list_tools(self) -> ListToolsResult:
        return await self._reach(lambda client: client.session.list_tools())

    async def _reach(self, send: Any) -> Any:
        """`send(client)` on a fresh client; in spawn mode, start the daemon once if none runs."""
        try:
            return await self._send(send)
        except _NotReached:
            if self.mode != "spawn":
                raise DaemonUnavailable(self._down()) from None
        async with self._starting:  # one start per shim; daemon.py makes it one per machine
            if not await self.daemon.answers():
                await self.daemon.start()
        try:
            return await self._send(send)
        except _NotReached:
            raise DaemonUnavailable(self._down()) from None

    async def _send(self, send: Any) -> Any:
        transport = streamable_http_client(
            self.daemon.mcp_url, http_client=self._http, terminate_on_close=False
        )
        try:
            async with Client(transport, mode=LATEST_MODERN_VERSION, cache=None) as client:
                return await send(client)
        except Exception as exc:  # the SDK's task groups wrap what failed: look inside
            raise self._translate(exc) from None

    def _translate(self, exc: Exception) -> Exception:
        """What a failure to reach the daemon means to the caller; other errors unchanged."""
        leaves = list(_leaves(exc))
        if any(isinstance(e, httpx2.ConnectError | httpx2.ConnectTimeout) for e in leaves):
            return _NotReached()
        for leaf in leaves:
            if isinstance(leaf, httpx2.HTTPStatusError):
                return DaemonUnavailable(self._refused(leaf.response.status_code))
        for leaf in leaves:
            if isinstance(leaf, httpx2.TransportError):
                return DaemonUnavailable(self._lost(leaf))
        for leaf in leaves:
            if isinstance(leaf, MCPError):
                return DaemonUnavailable(
                    f"the exai-mcp daemon at {self.daemon.url} could not take the call: {leaf}"
                )
        return exc

    def _down(self) -> str:
        advice = {
            "require": "start it with `exai-mcp serve --http`, or set EXAI_DAEMON=spawn to "
            "have this process start it, or EXAI_DAEMON=off to serve in this process",
            "auto": "it was answering when this process started; start it again with "
            "`exai-mcp serve --http`, or restart this MCP server to serve in-process",
        }.get(self.mode, f"see {self.daemon.log_path}")
        return f"the exai-mcp daemon at {self.daemon.url} is not answering; {advice}"

    def _lost(self, exc: BaseException) -> str:
        return (
            f"the exai-mcp daemon at {self.daemon.url} stopped answering during the call "
            f"({type(exc).__name__}); the call was not answered. The next call reconnects"
            + (", starting a new daemon if none answers" if self.mode == "spawn" else "")
        )

    def _refused(self, status: int) -> str:
        if status == 401:
            return (
                f"the exai-mcp daemon at {self.daemon.url} refused this process's token: set "
                "EXAI_HTTP_TOKEN here to the daemon's"
            )
        return f"the exai-mcp daemon at {self.daemon.url} refused the request (HTTP {status})"

    def _too_slow(self) -> str:
        return (
            f"the exai-mcp daemon at {self.daemon.url} did not answer within the shim's "
            f"{self.shim_timeout:g} s (ceil(2 x WORKFLOW_TOOL_TIMEOUT_SECS)); the call was "
            "cancelled there"
        )


async def _raise_refusal(response: httpx2.Response) -> None:
    """A refused request (token, Host) fails as what it is, not as a protocol error."""
    if response.status_code in (401, 403, 421):
        response.raise_for_status()


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def build_shim_server(link: DaemonLink) -> Server[None]:
    """A stdio MCP server with exai-mcp's face (name, instructions, tools) and no pipeline."""
    local_tools = [tool_definition(spec) for spec in TOOLS]

    async def list_tools(
        _ctx: ServerRequestContext[None], _params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        try:
            return await link.list_tools()
        except ExaiError as exc:  # the daemon is down: the same tools, whose calls will say so
            log.warning("listing this server's own tools: %s", exc)
            return ListToolsResult(tools=local_tools)

    async def call_tool(
        ctx: ServerRequestContext[None], params: CallToolRequestParams
    ) -> CallToolResult:
        send_progress = ctx.session.report_progress if asked_for_progress(ctx) else None
        try:
            return await link.call_tool(params.name, params.arguments, send_progress)
        except ExaiError as exc:
            log.warning("%s request %s: %s", params.name, ctx.request_id, exc)
            return error_result(user_message(exc))

    server = Server(
        "exai-mcp",
        version=__version__,
        title="exai-mcp: expert second opinions",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    server.middleware.append(answer_protocol_errors)
    return server


def client_id() -> str:
    """How the daemon tells this window's calls from the others' (per-client limit, /health)."""
    return f"stdio-{os.getpid()}"


async def serve_attached(settings: Settings, link: DaemonLink) -> None:
    """Serve one stdio session, every call answered by the daemon, until stdin closes."""
    server = build_shim_server(link)
    intake = SessionIntake(settings.session_max_pending)
    try:
        async with stdio_session(intake) as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        with anyio.CancelScope(shield=True):
            await link.aclose()


async def choose_and_serve(settings: Settings) -> bool:
    """Serve attached if EXAI_DAEMON says to (True), or return False to serve in-process.

    `auto` decides once, here, with one /health probe, and logs which it chose.
    """
    daemon = Daemon.from_settings(settings)
    if settings.daemon == "auto" and not await daemon.answers():
        log.info("no exai-mcp daemon answers at %s; serving in this process", daemon.url)
        return False
    log.info(
        "attached to the exai-mcp daemon at %s (EXAI_DAEMON=%s); calls wait at most %d s",
        daemon.url,
        settings.daemon,
        settings.timeouts().shim,
    )
    link = DaemonLink(
        daemon,
        mode=settings.daemon,
        shim_timeout=settings.timeouts().shim,
        client_id=client_id(),
    )
    await serve_attached(settings, link)
    return True


__all__ = ["DaemonLink", "build_shim_server", "choose_and_serve", "serve_attached"]


def _refused_while_draining(result: CallToolResult) -> bool:
    return bool(
        result.is_error
        and result.content
        and getattr(result.content[0], "text", None) == SHUTTING_DOWN
    )
