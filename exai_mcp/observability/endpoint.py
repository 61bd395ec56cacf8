"""`GET /metrics`: as a route of the HTTP server, or (stdio mode) a server of its own.

    Route("/metrics", MetricsEndpoint(registry), methods=["GET"])      # serve --http
    async with metrics_server(registry, port):                         # EXAI_METRICS_PORT
        ...

The stdio-mode server binds 127.0.0.1 only and answers only requests whose Host names a
loopback address (no DNS rebinding). It logs its address to stderr; stdout stays JSON-RPC's.
A port it cannot bind is logged and the MCP session goes on without metrics.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import uvicorn
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from mcp.server import Server
    from prometheus_client import CollectorRegistry

    from exai_mcp.services import Services

log = logging.getLogger("exai_mcp.metrics")

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
START_WAIT = 10.0  # seconds for the metrics server to bind


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class MetricsEndpoint:
    """The scrape, in the format the scraper's Accept header asks for."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from exai_mcp.observability.metrics import exposition  # loads prometheus_client

        self.registry = registry
        self._exposition = exposition

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, content_type = self._exposition(self.registry, Headers(scope=scope).get("accept"))
        await _send(send, 200, body, content_type)


class _LoopbackMetrics:
    """The whole app of the stdio-mode server: /metrics, for loopback Host headers only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.endpoint = MetricsEndpoint(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to start
        host = Headers(scope=scope).get("host", "")
        if (urlsplit(f"http://{host}").hostname or "") not in LOOPBACK:
            await _send(send, 421, b"Host does not name this server\n", "text/plain")
        elif scope["path"] != "/metrics" or scope["method"] not in ("GET", "HEAD"):
            await _send(send, 404, b"only GET /metrics is served here\n", "text/plain")
        else:
            await self.endpoint(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the MCP session owns the process), and with an
    event for "bound, or failed to"."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


@asynccontextmanager
async def metrics_server(registry: CollectorRegistry, port: int) -> AsyncIterator[int | None]:
    """Serve /metrics on 127.0.0.1:`port` while the block runs; yields the bound port
    (None if it could not bind, which is logged)."""
    config = uvicorn.Config(
        _LoopbackMetrics(registry),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = _Server(config)

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn's way to report a port it cannot bind (logged already)
            pass
        finally:
            server.ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        with anyio.move_on_after(START_WAIT):
            await server.ready.wait()
        bound: int | None = None
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            log.info("metrics: http://127.0.0.1:%d/metrics", bound)
        else:
            log.error("metrics: could not serve on 127.0.0.1:%d (EXAI_METRICS_PORT)", port)
        try:
            yield bound
        finally:
            server.should_exit = True


@asynccontextmanager
async def metrics_beside(server: Server[Services], port: int | None) -> AsyncIterator[None]:
    """Stdio mode: /metrics for `server` on 127.0.0.1:`port` (EXAI_METRICS_PORT) while the
    block runs; nothing at all when `port` is None."""
    if port is None:
        yield
        return
    # Only here: a server without EXAI_METRICS_PORT never loads prometheus_client.
    from exai_mcp.observability.metrics import metrics_registry

    running: list[Services] = []
    inner = server.lifespan

    @asynccontextmanager
    async def lifespan(srv: Server[Services]) -> AsyncIterator[Services]:
        async with inner(srv) as services:
            running.append(services)
            try:
                yield services
            finally:
                running.remove(services)

    server.lifespan = lifespan
    registry = metrics_registry(lambda: running[0] if running else None)
    async with metrics_server(registry, port):
        yield
