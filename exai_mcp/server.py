"""Assembles the exai-mcp server: services, the pipeline, and the tools it exposes.

Read top to bottom, this is the request's journey: `tools/call` arrives, its arguments are
validated against the tool's pydantic input model, and the pipeline (middleware/pipeline.py)
runs it: the tool plans the call, the layers carry the plan down to the provider, and the tool
finishes the call for its caller with the answer. Every failure comes back as an
`isError` result whose text the assistant can act on; nothing a client sends crashes the server.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
)
from pydantic import ValidationError

from exai_mcp import __version__
from exai_mcp.config import Settings
from exai_mcp.errors import ExaiError, InvalidArguments, UnknownTool, user_message
from exai_mcp.files import FileAccessPolicy
from exai_mcp.middleware.breaker import CircuitBreaker
from exai_mcp.middleware.cache import ResultCache
from exai_mcp.middleware.call import Answer
from exai_mcp.middleware.clients import ClientLimits
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.middleware.health import HealthMonitor
from exai_mcp.middleware.limits import Limiter, TrackedLimiter
from exai_mcp.middleware.pipeline import Pipeline
from exai_mcp.middleware.pool import ProviderPool
from exai_mcp.middleware.progress import SendProgress
from exai_mcp.middleware.quota import Bucket, ProviderQuota, TokenBucket
from exai_mcp.middleware.retry import RetryPolicy
from exai_mcp.middleware.singleflight import SingleFlight
from exai_mcp.observability.layers import Observability
from exai_mcp.observability.tracing import tracing_for
from exai_mcp.providers.catalog import ModelCatalog
from exai_mcp.providers.registry import create_providers
from exai_mcp.redact import Redactor
from exai_mcp.services import Services
from exai_mcp.shared import build_shared, thread_store
from exai_mcp.store.maintenance import run_maintenance
from exai_mcp.store.pending import PendingWrites
from exai_mcp.store.threads import ThreadStore, default_db_path
from exai_mcp.tools import analyze, status, workflow
from exai_mcp.tools.base import AnswerOutput, ToolSpec, tool_schema
from exai_mcp.tools.validation import describe_validation_error

log = logging.getLogger("exai_mcp")

TOOLS: tuple[ToolSpec, ...] = (analyze.TOOL, workflow.TOOL, status.TOOL)

INSTRUCTIONS = (
    "exai-mcp gives you a second opinion from expert models (Kimi by Moonshot, GLM by Zhipu). "
    "Use `analyze` for one expert look at a question, text or files (absolute paths). "
    "Use `workflow` for a multi-step investigation (debug, codereview, secaudit, refactor, "
    "testgen, thinkdeep, planner, precommit, docgen): you do the work step by step, the server "
    "keeps the thread, and the final step gets one expert verdict. "
    "Use `status` to see whether the server is healthy. Calls can take a while; the server "
    "sends progress while the model works. Answers are a second opinion: verify them."
)


def open_store(settings: Settings) -> ThreadStore:
    """The thread store the settings name; StoreUnusable (one line) if the file cannot serve."""
    local = ThreadStore(
        settings.state_db or default_db_path(),
        ttl_hours=settings.thread_ttl_hours,
        max_turns=settings.max_thread_turns,
    )
    return thread_store(settings, local)  # in Redis when EXAI_REDIS_URL is set


def build_services(settings: Settings, task_group: TaskGroup, store: ThreadStore) -> Services:
    timeouts = settings.timeouts()
    providers = create_providers(settings)
    local_cache: ResultCache[Answer] = ResultCache(
        max_entries=settings.cache_max_entries, ttl=settings.cache_ttl
    )
    # With EXAI_REDIS_URL, each piece of state below has a Redis twin shared by every server.
    shared = build_shared(settings, local_cache)

    def breaker(name: str) -> CircuitBreaker:
        failures, cooldown = settings.breaker_failures, settings.breaker_cooldown
        if shared is not None:
            return shared.breaker(name, failures=failures, cooldown=cooldown)
        return CircuitBreaker(name, failures=failures, cooldown=cooldown)

    def limiter(name: str, total: int) -> Limiter:
        local = TrackedLimiter(name, total)
        return local if shared is None else shared.limiter(local)

    def bucket(name: str, per_minute: int | None) -> Bucket | None:
        if per_minute is None:
            return None
        return TokenBucket(per_minute) if shared is None else shared.bucket(name, per_minute)

    pool = ProviderPool(
        providers,
        breakers={name: breaker(name) for name in providers},
        limits={name: limiter(name, settings.provider(name).max_inflight) for name in providers},
        attempt_timeouts={name: timeouts.attempt[name] for name in providers},
    )
    global_limit = limiter("global", settings.max_inflight)
    quotas = {
        name: ProviderQuota(
            name,
            rpm=bucket(f"{name}:rpm", getattr(settings, f"{name}_rpm")),
            rpm_variable=f"EXAI_{name.upper()}_RPM",
            tpm=bucket(f"{name}:tpm", getattr(settings, f"{name}_tpm")),
            tpm_variable=f"EXAI_{name.upper()}_TPM",
        )
        for name in providers
    }
    client_limits = ClientLimits(settings.client_max_inflight)
    catalog = ModelCatalog(
        {p.spec.name: p.default_model for p in settings.configured_providers()},
        settings.default_model,
    )
    keys = {
        p.key_variable: p.api_key.get_secret_value()
        for p in settings.configured_providers()
        if p.api_key
    }
    files = FileAccessPolicy.from_roots(
        settings.effective_roots(), settings.max_file_bytes, own_keys=keys
    )
    pipeline = Pipeline(
        server_deadline=timeouts.server_deadline,
        cache=local_cache if shared is None else shared.cache,
        flights=SingleFlight(task_group, grace=settings.cancel_grace),
        across=None if shared is None else shared.flights,
        quotas={name: q for name, q in quotas.items() if q.rpm or q.tpm},
        global_limit=global_limit,
        client_limits=client_limits,
        pool=pool,
        catalog=catalog,
        files=files,
        policy=RetryPolicy(max_attempts=settings.max_attempts),
        max_output_tokens=settings.max_output_tokens,
        progress_interval=settings.progress_interval,
        redactor=Redactor(keys.values()),
        observability=Observability(
            tracing=tracing_for(settings.otel_endpoint, version=__version__),
            log_calls=settings.log_format == "json",
        ),
    )
    return Services(
        settings=settings,
        timeouts=timeouts,
        catalog=catalog,
        pool=pool,
        files=files,
        store=store,
        # Deferred unless threads live in Redis, where a follow-up may reach another server.
        writes=PendingWrites(store, task_group, defer=shared is None),
        pipeline=pipeline,
        health=HealthMonitor(
            lambda: [global_limit, *pool.limits.values(), *client_limits.clients().values()],
            stuck_after=timeouts.server_deadline,
            interval=settings.health_interval,
        ),
        shared=shared,
    )


def tool_definition(spec: ToolSpec) -> Tool:
    return Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=tool_schema(spec.input_model),
        output_schema=tool_schema(spec.output_model),
        annotations=spec.annotations,
    )


def asked_for_progress(ctx: ServerRequestContext[Services]) -> bool:
    """Whether the client sent a progress token: only then is a progress ticker worth running."""
    return bool(ctx.meta) and ctx.meta.get("progress_token") is not None


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one call came to: the result every transport sends, and the failure behind it.

    `failure` is None for an answer; otherwise the exception whose `user_message` is the
    result's text, so a transport with status codes (REST) can choose one from its class.
    """

    result: CallToolResult
    failure: BaseException | None = None


TOOL_INDEX: dict[str, ToolSpec] = {spec.name: spec for spec in TOOLS}


async def dispatch(
    services: Services,
    name: str,
    arguments: dict[str, Any] | None,
    *,
    client: str,
    request_id: str,
    send_progress: SendProgress | None = None,
    deadline: Deadline | None = None,
) -> Outcome:
    """One tools/call, whichever transport carried it: validation, the tool, the pipeline.

    Never raises for anything a client sends or a provider does; cancellation propagates.
    `deadline` is counted from the request's arrival (default: now).
    """
    deadline = deadline or Deadline.after(services.timeouts.server_deadline)
    spec = TOOL_INDEX.get(name)
    if spec is None:
        return _failed(UnknownTool(f"unknown tool {name!r}; available: {', '.join(TOOL_INDEX)}"))
    try:
        args = spec.input_model.model_validate(arguments or {})
    except ValidationError as exc:
        return _failed(
            InvalidArguments(describe_validation_error(spec.name, spec.input_model, exc))
        )
    try:
        if spec.direct is not None:
            output = await spec.direct(args, services)
        else:
            assert spec.plan is not None
            plan = spec.plan
            output = await services.pipeline.run(
                spec.name,
                request_id,
                lambda: plan(args, services),
                send_progress=send_progress,
                deadline=deadline,
                client=client,
            )
    except ExaiError as exc:
        log.info("%s request %s from %s failed: %s", spec.name, request_id, client, exc)
        return _failed(exc)
    except Exception as exc:
        log.exception("%s request %s from %s failed unexpectedly", spec.name, request_id, client)
        return _failed(exc)
    log.log(
        logging.DEBUG if spec.direct else logging.INFO,
        "%s request %s from %s done in %.0f ms%s",
        spec.name,
        request_id,
        client,
        deadline.elapsed() * 1000,
        " (cached)" if isinstance(output, AnswerOutput) and output.cached else "",
    )
    return Outcome(
        CallToolResult(
            content=[TextContent(type="text", text=output.to_text())],
            structured_content=output.model_dump(mode="json"),
        )
    )


SHUTTING_DOWN = "the server is shutting down; retry the call against a running server"
"""A call refused, never started, because its server drains: an attached shim that may spawn
a daemon starts a new one and sends the call again."""


def _failed(exc: BaseException) -> Outcome:
    return Outcome(error_result(user_message(exc)), exc)


def mcp_client_id(ctx: ServerRequestContext[Services]) -> str:
    """Who sent an MCP call: "stdio" for the one session on stdin/stdout; over HTTP the MCP
    session id, else (the sessionless 2026 protocol) the X-Client-Id header, else "mcp-http"."""
    headers = getattr(ctx.request, "headers", None)
    if headers is None:
        return "stdio"
    return headers.get("mcp-session-id") or headers.get("x-client-id") or "mcp-http"


def build_server(settings: Settings, store: ThreadStore | None = None) -> Server[Services]:
    """The server, with `store` or (without it) the store the settings name, opened right now.

    Opening before any transport starts means a broken EXAI_STATE_DB stops start-up with one
    line (StoreUnusable) instead of a server that never answers. A store passed in stays the
    caller's to close; one opened here is closed when the server stops, so run it once.
    """
    owned = store is None
    threads = open_store(settings) if store is None else store
    definitions = [tool_definition(spec) for spec in TOOLS]
    timeouts = settings.timeouts()

    @asynccontextmanager
    async def lifespan(_server: Server[Services]) -> AsyncIterator[Services]:
        async with anyio.create_task_group() as tg:
            services = build_services(settings, tg, threads)
            configured = ", ".join(services.pool.providers) or "none (tool calls will explain)"
            log.info("exai-mcp %s ready; providers: %s", __version__, configured)
            if services.shared is not None:
                await services.shared.link.start(tg)  # bounded; degraded if Redis is down
            tg.start_soon(services.health.run)
            tg.start_soon(run_maintenance, threads)  # purges and shrinks, in a worker thread
            try:
                yield services
            finally:
                with anyio.CancelScope(shield=True):
                    await services.writes.drain()  # the threads replies named, before closing
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    for provider in services.pool.providers.values():
                        await provider.aclose()
                    if services.shared is not None:
                        await services.shared.link.aclose()
                if owned:
                    threads.close()

    async def list_tools(
        _ctx: ServerRequestContext[Services], _params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=definitions)

    async def call_tool(
        ctx: ServerRequestContext[Services], params: CallToolRequestParams
    ) -> CallToolResult:
        deadline = Deadline.after(timeouts.server_deadline)  # counted from arrival
        outcome = await dispatch(
            ctx.lifespan_context,
            params.name,
            params.arguments,
            client=mcp_client_id(ctx),
            request_id=str(ctx.request_id),
            send_progress=ctx.session.report_progress if asked_for_progress(ctx) else None,
            deadline=deadline,
        )
        return outcome.result

    server = Server(
        "exai-mcp",
        version=__version__,
        title="exai-mcp: expert second opinions",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    server.middleware.append(answer_protocol_errors)
    return server


async def answer_protocol_errors(ctx: Any, call_next: Any) -> Any:
    """MCP middleware: the protocol errors the spec asks for, each saying what is wrong.

    A tools/call without a tool name or with arguments that are no object, or naming a tool
    this server does not have, and a tools/list with a cursor (this server lists every tool
    in one page and gives out none) get -32602; the SDK would answer the first with a bare
    "Invalid request parameters", and the others not at all.
    """
    if ctx.request_id is not None:
        problem = request_params_problem(ctx.method, ctx.params)
        if problem is not None:
            raise MCPError(INVALID_PARAMS, problem)
    return await call_next(ctx)


def request_params_problem(method: str, params: Any) -> str | None:
    if method == "tools/list":
        if isinstance(params, dict) and params.get("cursor") is not None:
            return (
                "Invalid params: unknown cursor; this server lists every tool in one page "
                "and gives out no cursors"
            )
        return None
    if method != "tools/call":
        return None
    tools = ", ".join(TOOL_INDEX)
    if not isinstance(params, dict) or not isinstance(params.get("name"), str):
        return f"Invalid params: tools/call needs params.name, the tool to call ({tools})"
    if params["name"] not in TOOL_INDEX:
        return f"Unknown tool: {params['name'][:100]!r}; this server has {tools}"
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        return (
            "Invalid params: params.arguments must be an object holding the tool's arguments, "
            f"got {json_type(arguments)}"
        )
    return None


def json_type(value: Any) -> str:
    """How JSON names the type of a parsed value: 'an array', 'null'..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


__all__ = [
    "TOOLS",
    "InvalidArguments",
    "Outcome",
    "UnknownTool",
    "build_server",
    "dispatch",
    "open_store",
    "tool_definition",
]
