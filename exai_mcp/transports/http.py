"""The HTTP adapter: MCP streamable HTTP and a REST API beside it, one pipeline for both.

    anyio.run(serve_http, settings, store)        # EXAI_HTTP_HOST:EXAI_HTTP_PORT

One process, one server lifespan: the cache, single-flight, limits, breakers and thread store
are shared by every MCP session and every REST client, so an MCP call and a REST call that
are identical make one provider request. The app is the SDK's own `streamable_http_app`
(`/mcp`, sessions, SSE, DELETE) with these routes added to it:

    POST /api/v1/execute   {"tool": NAME, "arguments": {...}} -> a CallToolResult as JSON
                           (`Accept: text/event-stream`: `progress` events, then one `result`)
    GET  /api/v1/tools     the tool list with schemas, as tools/list gives it
    GET  /health           status, version, uptime, breakers, calls in flight, limits; never
                           calls a provider, never waits for a permit
    GET  /metrics          Prometheus metrics (exai_mcp.observability.metrics)

Guarantees: every error is JSON with `isError: true` and a message saying what to do; a REST
caller that disconnects is a cancelled caller (the pipeline keeps a shared execution alive
for its other waiters and for the cancel grace); a body over EXAI_HTTP_MAX_BODY_BYTES is
refused before it is read whole. Every request's Host (and Origin, when sent) must name the
bound address (any loopback name on a loopback bind); with EXAI_HTTP_TOKEN set every
endpoint but /health needs `Authorization: Bearer <token>`. On SIGTERM/SIGINT new calls get
503, calls in flight get EXAI_SHUTDOWN_GRACE_SECS to finish, the rest are cancelled.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import anyio
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import INVALID_REQUEST, CallToolResult, ErrorData, JSONRPCError, JSONRPCRequest
from sse_starlette.sse import AppStatus
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exai_mcp import __version__
from exai_mcp.config import Settings
from exai_mcp.errors import (
    BusyError,
    ConfigError,
    DeadlineExceeded,
    InputError,
    ProviderError,
    UnknownTool,
)
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.observability.endpoint import MetricsEndpoint
from exai_mcp.observability.logs import announce
from exai_mcp.observability.metrics import metrics_registry
from exai_mcp.server import (
    SHUTTING_DOWN,
    TOOLS,
    Outcome,
    build_server,
    dispatch,
    error_result,
    json_type,
    tool_definition,
)
from exai_mcp.services import Services
from exai_mcp.store.threads import ThreadStore
from exai_mcp.tools.status import shared_problems
from exai_mcp.transports.addresses import LOOPBACK_NAMES, WILDCARD_HOSTS, is_loopback
from exai_mcp.transports.jsonrpc import Rejected, read_line

log = logging.getLogger("exai_mcp.http")

DEFAULT_REST_CLIENT = "rest"


def refuse_to_serve(settings: Settings, host: str) -> str | None:
    """Why this bind is unsafe (one line naming the variable), or None."""
    if not is_loopback(host) and settings.http_token is None:
        return (
            f"refusing to serve HTTP on {host}, which is not a loopback address, without a "
            "token: set EXAI_HTTP_TOKEN (clients then send 'Authorization: Bearer <token>'), "
            "or bind 127.0.0.1"
        )
    return None


def status_for(failure: BaseException | None) -> int:
    """The HTTP status of a call's outcome, chosen by its error class (errors.py)."""
    if failure is None:
        return 200
    if isinstance(failure, UnknownTool):
        return 404
    if isinstance(failure, InputError):
        return 422
    if isinstance(failure, BusyError | ConfigError):  # ConfigError: no provider configured
        return 503
    if isinstance(failure, DeadlineExceeded):
        return 504
    if isinstance(failure, ProviderError):
        return 502
    return 500


def result_json(result: CallToolResult) -> dict[str, Any]:
    body = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    body.setdefault("isError", False)
    return body


def error_json(message: str) -> dict[str, Any]:
    return result_json(error_result(message))


async def send_json(
    send: Send, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def sse_event(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@dataclass
class HttpState:
    """What the routes share: the services (once the lifespan is up) and the drain flag."""

    settings: Settings
    services: Services | None = None
    draining: bool = False
    started: float = field(default_factory=time.monotonic)
    calls_in_flight: int = 0
    """POST requests being served once their body has arrived: REST calls and MCP requests
    (a tools/call until answered)."""
    open_requests: int = 0
    """Requests being served but /health: calls, and the SSE streams MCP sessions hold open."""
    mcp_ids: set[tuple[str, object]] = field(default_factory=set)
    """(MCP session, request id) of each request running over /mcp."""
    running: set[anyio.CancelScope] = field(default_factory=set)
    """The calls running now, each under a scope the shutdown cancels once its grace is over."""
    last_request: float = field(default_factory=time.monotonic)
    """When the last such request ended (or started): how long the server has been idle."""

    @contextmanager
    def until_shutdown(self) -> Iterator[anyio.CancelScope]:
        """Run a call so that the end of the shutdown grace cancels it; the caller then
        answers SHUT_DOWN_MID_CALL (`scope.cancelled_caught`) instead of a cut response."""
        with anyio.CancelScope() as scope:
            self.running.add(scope)
            try:
                yield scope
            finally:
                self.running.discard(scope)

    def shut_down_mid_call(self) -> Outcome:
        message = SHUT_DOWN_MID_CALL.format(grace=self.settings.shutdown_grace)
        return Outcome(error_result(message), BusyError(message))

    def idle_for(self) -> float:
        """Seconds with no request open, no call in flight: 0 while anything runs."""
        if self.open_requests or self.calls_in_flight:
            return 0.0
        return time.monotonic() - self.last_request


class HostCheck:
    """DNS-rebinding protection: Host (and Origin, when sent) must name this server."""

    def __init__(self, host: str) -> None:
        host = host.strip("[]").lower()
        self.any_host = host in WILDCARD_HOSTS  # bound everywhere: the token guards it
        self.allowed = LOOPBACK_NAMES | {host} if is_loopback(host) else frozenset({host})

    def refusal(self, headers: Headers) -> tuple[int, str] | None:
        if self.any_host:
            return None
        host = headers.get("host", "")
        if _hostname(f"http://{host}") not in self.allowed:
            return 421, f"Host header {host[:100]!r} does not name this server; refused"
        origin = headers.get("origin")
        if origin is not None and _hostname(origin) not in self.allowed:
            return 403, f"Origin {origin[:100]!r} is not allowed; refused"
        return None


def _hostname(url: str) -> str | None:
    try:
        return (urlsplit(url).hostname or "").lower() or None
    except ValueError:
        return None


class Guard:
    """Around the whole app: Host/Origin check, bearer token; counts the calls in flight."""

    def __init__(self, app: ASGIApp, state: HttpState, host: str) -> None:
        self.app = app
        self.state = state
        self.hosts = HostCheck(host)
        token = state.settings.http_token
        self._token = token.get_secret_value().encode() if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.hosts.refusal(headers)
        if refusal is not None:
            await send_json(send, refusal[0], error_json(refusal[1]))
            return
        path = scope["path"]
        if self._token is not None and path != "/health" and not self._authorized(headers):
            await send_json(
                send,
                401,
                error_json(
                    "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                    "with the token this server was given in EXAI_HTTP_TOKEN"
                ),
                {"WWW-Authenticate": "Bearer"},
            )
            return
        if path == "/health":  # a probe or a monitor does not keep an idle server alive
            # Open to all, but with a token set only its holders see more than the status.
            scope[FULL_HEALTH] = self._token is None or self._authorized(headers)
            await self.app(scope, receive, send)
            return
        state = self.state
        is_call = scope["method"] == "POST"  # REST calls and MCP requests (a tools/call lasts)
        state.open_requests += 1
        try:
            if is_call:
                await self._serve_call(scope, receive, send, headers)
            else:
                await self.app(scope, receive, send)
        finally:
            state.open_requests -= 1
            state.last_request = time.monotonic()

    async def _serve_call(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers
    ) -> None:
        """A POST: counted as in flight once its body is here (a client that stalls mid-upload
        is cut off with a 408, and holds up neither a drain nor the app); to /mcp, checked as
        stdio checks a line first."""
        state = self.state
        body = await self._whole_body(receive, send, headers)
        if body is None:
            return
        request_key = None
        if scope["path"] == "/mcp" and is_json(headers.get("content-type", "")):
            message = read_line(body.decode("utf-8", errors="replace"))
            request_key = _request_key(message, headers)
            refusal = _rpc_refusal(message, request_key in state.mcp_ids)
            if refusal is not None:
                await send_json(send, 400, refusal)
                return
            if request_key is not None:
                state.mcp_ids.add(request_key)
        state.calls_in_flight += 1
        try:
            await self.app(scope, _replaying(body, receive), send)
        finally:
            state.calls_in_flight -= 1
            if request_key is not None:
                state.mcp_ids.discard(request_key)

    async def _whole_body(self, receive: Receive, send: Send, headers: Headers) -> bytes | None:
        """The request body, or None once the client left or was answered 408 or 413."""
        limit = self.state.settings.http_max_body_bytes
        with anyio.move_on_after(BODY_TIMEOUT) as waited:
            try:
                return await read_body(receive, headers, limit)
            except BodyTooLarge:
                await send_json(
                    send,
                    413,
                    error_json(
                        f"request body over {limit} bytes (EXAI_HTTP_MAX_BODY_BYTES); send file "
                        "paths in 'files' instead of their contents"
                    ),
                    {"Connection": "close"},
                )
                return None
        if waited.cancelled_caught:
            await send_json(
                send,
                408,
                error_json(f"the request body did not arrive within {BODY_TIMEOUT:g} s"),
                {"Connection": "close"},
            )
        return None

    def _authorized(self, headers: Headers) -> bool:
        assert self._token is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token
        )


SHUT_DOWN_MID_CALL = (
    "the server shut down before this call finished (it had {grace:g} s, "
    "EXAI_SHUTDOWN_GRACE_SECS); retry the call against a running server"
)


class RefuseCallsWhileDraining:
    """MCP middleware (`Server.middleware`): a tools/call arriving after the signal gets an
    error result at once; the session's other requests (tools/list, cancel) still work."""

    def __init__(self, state: HttpState) -> None:
        self.state = state

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        if self.state.draining:
            return error_result(SHUTTING_DOWN)
        with self.state.until_shutdown() as shutdown:
            return await call_next(ctx)
        assert shutdown.cancelled_caught  # only a cancelled scope gets here
        return self.state.shut_down_mid_call().result


def _request_key(message: object, headers: Headers) -> tuple[str, object] | None:
    """(MCP session, request id) of a request sent within a session, else None."""
    session = headers.get("mcp-session-id")
    if session is None or not isinstance(message, JSONRPCRequest):
        return None
    return session, message.id


def _rpc_refusal(message: object, id_in_use: bool) -> Any | None:
    """The JSON-RPC error body a POST to /mcp is owed before the SDK sees it, as on stdio: an
    invalid message (a bad id, a batch) is answered, not dropped with a 202; and a request
    reusing the id of one still running in its session is refused, since the SDK would leave
    the first one open forever."""
    if isinstance(message, Rejected):
        if not message.replies:
            return None  # owed nothing: the SDK answers it as it does
        replies = [
            r.model_dump(mode="json", by_alias=True, exclude_unset=True) for r in message.replies
        ]
        return replies[0] if len(replies) == 1 else replies
    if id_in_use and isinstance(message, JSONRPCRequest):
        error = ErrorData(
            code=INVALID_REQUEST,
            message=f"Invalid Request: id {message.id!r} is already in use by a request of "
            "this session that is still running; give each request its own id",
        )
        return JSONRPCError(jsonrpc="2.0", id=message.id, error=error).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    return None


DRAIN_CAP = 64 << 20  # bytes of an over-size body read and dropped, so the client sees the 413
DRAIN_TIME = 5.0
BODY_TIMEOUT = 30.0  # seconds a request body may take to arrive, whole
CUT_CALLS_ANSWER_TIME = 2.0  # seconds the calls cancelled at the end of the grace get to answer


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app once the body is read: the body, then the connection's own
    messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, headers: Headers, limit: int) -> bytes | None:
    """The request body (None if the client left); BodyTooLarge as soon as it is known to
    exceed `limit` (by its Content-Length, or by counting), never holding more of it."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await _drop_rest(receive)
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        more = message.get("more_body", False)
        if size > limit:
            if more:
                await _drop_rest(receive)
            raise BodyTooLarge
        chunks.append(chunk)
        if not more:
            return b"".join(chunks)


async def _drop_rest(receive: Receive) -> None:
    """Read and drop what is left of a refused body (bounded in bytes and time): a client
    still writing when the connection closes sees a reset instead of the 413."""
    dropped = 0
    with anyio.move_on_after(DRAIN_TIME):
        while dropped <= DRAIN_CAP:
            message = await receive()
            dropped += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class Execute:
    """POST /api/v1/execute: one tool call, answered as JSON or as an SSE stream."""

    def __init__(self, state: HttpState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        limit = self.state.settings.http_max_body_bytes
        if not is_json(headers.get("content-type", "")):
            await send_json(
                send,
                415,
                error_json("send the call as JSON with 'Content-Type: application/json'"),
            )
            return
        body = await read_body(receive, headers, limit)  # whole already (see Guard)
        if body is None:  # the client left before sending its call
            return
        call = parse_call(body)
        if isinstance(call, str):
            await send_json(send, 400, error_json(call))
            return
        tool, arguments = call
        services = self.state.services
        if services is None or self.state.draining:
            message = SHUTTING_DOWN if self.state.draining else "the server is starting; retry"
            await send_json(send, 503, error_json(message), {"Retry-After": "1"})
            return
        deadline = Deadline.after(services.timeouts.server_deadline)
        client = headers.get("x-client-id") or DEFAULT_REST_CLIENT
        request_id = f"rest-{uuid.uuid4().hex[:12]}"
        streaming = "text/event-stream" in headers.get("accept", "")

        async def send_progress(progress: float, total: float | None, message: str | None) -> None:
            await send(
                {
                    "type": "http.response.body",
                    "body": sse_event(
                        "progress", {"progress": progress, "total": total, "message": message}
                    ),
                    "more_body": True,
                }
            )

        if streaming:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-store"),
                    ],
                }
            )
        outcome = None
        with self.state.until_shutdown() as shutdown:
            async with anyio.create_task_group() as tg:
                # A caller that disconnects is a cancelled caller.
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope, request_id)
                outcome = await dispatch(
                    services,
                    tool,
                    arguments,
                    client=client,
                    request_id=request_id,
                    send_progress=send_progress if streaming else None,
                    deadline=deadline,
                )
                tg.cancel_scope.cancel()
        if shutdown.cancelled_caught:
            outcome = self.state.shut_down_mid_call()
        if outcome is None:  # the caller left; nobody to answer
            return
        status = status_for(outcome.failure)
        body = result_json(outcome.result)
        if streaming:
            body["status"] = status
            await send({"type": "http.response.body", "body": sse_event("result", body)})
        else:
            # Busy or shutting down passes; no provider configured does not, until a restart.
            extra = {"Retry-After": "1"} if isinstance(outcome.failure, BusyError) else None
            await send_json(send, status, body, extra)


async def _cancel_on_disconnect(
    receive: Receive, scope: anyio.CancelScope, request_id: str
) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            log.info("REST request %s: the client disconnected; cancelling it", request_id)
            scope.cancel()
            return


def parse_call(body: bytes) -> tuple[str, dict[str, Any]] | str:
    """(tool, arguments), or why the body is not a call (for a 400)."""
    shape = 'expected {"tool": NAME, "arguments": {...}}'
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"body is not valid JSON ({exc}); {shape}"
    if not isinstance(data, dict):
        return f"body is {json_type(data)}, not an object; {shape}"
    unknown = sorted(set(data) - {"tool", "arguments"})
    if unknown:  # a misspelt "arguments" would otherwise run the tool with none
        return f"unknown field {', '.join(map(repr, unknown))}: {shape}"
    tool = data.get("tool")
    if not isinstance(tool, str) or not tool:
        return f"'tool' is missing or not a string; {shape}"
    arguments = data.get("arguments", {})
    if not isinstance(arguments, dict):
        return f"'arguments' must be a JSON object, got {json_type(arguments)}; {shape}"
    if _ESCAPED_SURROGATE.search(body):  # JSON allows "\ud800"; UTF-8, SQLite and HTTP do not
        where = _lone_surrogate(arguments, "arguments")
        if where is not None:
            return (
                f"{where} is not valid Unicode: it holds a lone UTF-16 surrogate (a \\uD800-"
                "\\uDFFF escape without its pair); send the text as UTF-8"
            )
    return tool, arguments


_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: Any, path: str) -> str | None:
    """Where in `value` a string holding a lone surrogate sits (a dotted path), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _lone_surrogate(item, f"{path}.{key}")
        if found is not None:
            return found
    return None


FULL_HEALTH = "exai.full_health"  # scope key: may this request see the whole /health body


class Health:
    """GET /health: 200 while the server can serve, 503 otherwise. Reads counters only."""

    def __init__(self, state: HttpState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self.state.services
        body: dict[str, Any] = {
            "version": __version__,
            "pid": os.getpid(),  # which process answers: the one to stop, or to restart
            "uptime_secs": round(time.monotonic() - self.state.started, 1),
        }
        if services is None:
            await send_json(send, 503, {"status": "starting", **body})
            return
        pool = services.pool
        providers = {
            name: {"available": pool.available(name), "breaker": pool.breakers[name].stats()}
            for name in pool.providers
        }
        problems = list(services.health.problems().values())
        # Redis down: degraded but serving (in-process state), so still 200 for a balancer.
        redis_trouble = shared_problems(services)
        limiters = [services.pipeline.global_limit, *pool.limits.values()]
        usable = any(entry["available"] for entry in providers.values())
        if self.state.draining:
            status = "draining"
        elif not providers:
            status = "no provider configured"
        elif not usable:
            status = "no provider available"
        elif problems or redis_trouble:
            status = "degraded"
        else:
            status = "ok"
        body.update(
            status=status,
            providers=providers,
            calls_in_flight=self.state.calls_in_flight,
            executions_in_flight=len(services.pipeline.flights),
            limits={lim.name: lim.stats() for lim in limiters},
            problems=[*problems, *redis_trouble],
        )
        if services.shared is not None:  # with every server's permit holders (bounded reads)
            body["redis"] = await services.shared.snapshot()
        serving = status == "ok" or (status == "degraded" and not problems)
        if not scope.get(FULL_HEALTH, True):  # pid, breaker reasons, URLs: for the token's holders
            body = {"status": status, "version": __version__}
        await send_json(send, 200 if serving else 503, body)


class ToolList:
    """GET /api/v1/tools: what tools/list answers, as JSON."""

    def __init__(self) -> None:
        self.body = {
            "tools": [
                tool_definition(spec).model_dump(mode="json", by_alias=True, exclude_none=True)
                for spec in TOOLS
            ]
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, self.body)


def transport_security(host: str) -> TransportSecuritySettings | None:
    """The SDK's own check for /mcp; None lets it protect a loopback bind itself."""
    bare = host.strip("[]").lower()
    if bare in LOOPBACK_NAMES:
        return None
    if bare in WILDCARD_HOSTS:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = [bare, *LOOPBACK_NAMES] if is_loopback(bare) else [bare]  # 127.0.0.2 and the like
    shown = [f"[{name}]" if ":" in name else name for name in names]
    return TransportSecuritySettings(
        allowed_hosts=[form for name in shown for form in (name, f"{name}:*")],
        allowed_origins=[
            form
            for name in shown
            for form in (f"http://{name}", f"http://{name}:*", f"https://{name}:*")
        ],
    )


def build_app(
    settings: Settings, store: ThreadStore | None, host: str
) -> tuple[ASGIApp, HttpState]:
    """The whole ASGI app (SDK app + REST routes, behind the guard) and its shared state."""
    server = build_server(settings, store)
    state = HttpState(settings)
    server_lifespan = server.lifespan

    @asynccontextmanager
    async def lifespan(srv: Any) -> AsyncIterator[Services]:
        # Entered once by the session manager: the REST routes use the same services.
        async with server_lifespan(srv) as services:
            state.services = services
            try:
                yield services
            finally:
                state.services = None

    server.lifespan = lifespan
    server.middleware.append(RefuseCallsWhileDraining(state))
    routes = [
        Route("/api/v1/execute", Execute(state), methods=["POST"]),
        Route("/api/v1/tools", ToolList(), methods=["GET"]),
        Route("/health", Health(state), methods=["GET"]),
        Route(
            "/metrics", MetricsEndpoint(metrics_registry(lambda: state.services)), methods=["GET"]
        ),
    ]
    app = server.streamable_http_app(
        host="127.0.0.1" if is_loopback(host) else host,
        transport_security=transport_security(host),
        max_request_body_size=settings.http_max_body_bytes,
        custom_starlette_routes=routes,
    )
    app.add_exception_handler(HTTPException, _http_error)
    return Guard(app, state, host), state


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no such route, wrong method) as JSON like every other error."""
    assert isinstance(exc, HTTPException)
    routes = "POST /api/v1/execute, GET /api/v1/tools, GET /health, GET /metrics, /mcp"
    return JSONResponse(
        error_json(f"{request.method} {request.url.path}: {exc.detail}; this server has {routes}"),
        status_code=exc.status_code,
        headers=exc.headers,
    )


class _Uvicorn(uvicorn.Server):
    """uvicorn's graceful shutdown, plus: new calls get 503 at once, and a signal is an
    ordinary exit (status 0), not re-raised after the shutdown as uvicorn does."""

    def __init__(self, config: uvicorn.Config, state: HttpState) -> None:
        super().__init__(config)
        self.state = state

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.state.draining:
            log.info(
                "shutting down: no new calls; %d in flight get up to %g s to finish",
                self.state.calls_in_flight,
                self.state.settings.shutdown_grace,
            )
        self.state.draining = True
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop now
        self.should_exit = True

    async def shutdown(self, sockets: Any = None) -> None:
        # Calls in flight finish first (new ones get 503 meanwhile), within the grace; then the
        # SSE streams still open (idle MCP sessions) end, and uvicorn closes the rest.
        self.state.draining = True
        grace = self.state.settings.shutdown_grace
        with anyio.move_on_after(grace) as waited:
            await self._calls_done()
        if waited.cancelled_caught:
            log.warning(
                "shutting down: %d calls still running after %g s are cancelled",
                self.state.calls_in_flight,
                grace,
            )
            # Each gets an answer saying so (a JSON 503, a result event, an MCP error result)
            # rather than a connection cut by uvicorn.
            for call in list(self.state.running):
                call.cancel()
            with anyio.move_on_after(CUT_CALLS_ANSWER_TIME):
                await self._calls_done()
        AppStatus.should_exit = True
        self.config.timeout_graceful_shutdown = 1.0 if waited.cancelled_caught else grace
        await super().shutdown(sockets)

    async def _calls_done(self) -> None:
        """Return once no call is in flight (or a second Ctrl-C says stop now)."""
        while True:  # polled: the count changes in many places, and 50 ms is plenty
            if not self.state.calls_in_flight or self.force_exit:
                return
            await anyio.sleep(0.05)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                announce(
                    f"exai-mcp: listening on http://{shown}:{port}",
                    log_format=self.state.settings.log_format,
                )


async def exit_when_idle(state: HttpState, server: uvicorn.Server, idle_exit: float) -> None:
    """Stop the server once nothing has been asked of it for `idle_exit` seconds."""
    while True:  # wakes once a second at most: the check is two reads
        idle = state.idle_for()
        if idle >= idle_exit:
            break
        await anyio.sleep(min(idle_exit - idle, 1.0))
    log.info("no call and no open request for %g s; exiting (--idle-exit)", idle_exit)
    state.draining = True
    server.should_exit = True


async def serve_http(
    settings: Settings,
    store: ThreadStore | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    idle_exit: float | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; `host`/`port` override EXAI_HTTP_HOST/EXAI_HTTP_PORT.

    `idle_exit` (seconds, 0 or None: never): exit after that long with no call and no open
    request, as a daemon started by an attached stdio process does.
    """
    # "[::1]" as in a URL is "::1" to bind.
    host = (
        (settings.http_host if host is None else host).strip().removeprefix("[").removesuffix("]")
    )
    port = settings.http_port if port is None else port
    problem = refuse_to_serve(settings, host)
    if problem is not None:
        raise ConfigError(problem)
    app, state = build_app(settings, store, host)
    # sse-starlette would end every SSE stream at the signal, MCP calls in flight included;
    # _Uvicorn.shutdown ends them once those calls are answered.
    AppStatus.disable_automatic_graceful_drain()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # our logging (stderr, keys masked) stays in charge
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_grace,
    )
    server = _Uvicorn(config, state)
    async with anyio.create_task_group() as tg:
        if idle_exit:
            tg.start_soon(exit_when_idle, state, server, idle_exit)
        try:
            await server.serve()
        except SystemExit:  # uvicorn's way to fail start-up (address in use, ...): logged
            server.started = False
        tg.cancel_scope.cancel()
    if not server.started:
        raise ConfigError(
            f"could not listen on {host}:{port} (see the error above); choose another "
            "EXAI_HTTP_PORT / --port, or stop the process using it"
        )


__all__ = ["build_app", "is_loopback", "refuse_to_serve", "serve_http", "status_for"]
