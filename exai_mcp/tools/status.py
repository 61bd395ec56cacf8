"""`status`: what the server is doing right now. Read-only; bypasses the cache and the limits."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from exai_mcp import __version__
from exai_mcp.providers.registry import SPECS
from exai_mcp.services import Services
from exai_mcp.tools.base import ToolInput, ToolOutput, ToolSpec, compact_schema


class StatusInput(ToolInput):
    pass


class LimitState(BaseModel):
    model_config = ConfigDict(json_schema_extra=compact_schema)

    limit: int
    in_use: int
    waiting: int
    holders: list[dict[str, Any]] = Field(default_factory=list)


STARTED = time.monotonic()


class ProcessState(BaseModel):
    model_config = ConfigDict(json_schema_extra=compact_schema)

    pid: int
    uptime_secs: float
    rss_mib: float | None  # Linux only
    peak_rss_mib: float | None  # Unix only


def process_state() -> ProcessState:
    """Memory as the OS counts it, so an operator (or the benchmark) can see it stay bounded."""
    rss = peak = None
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource

        # ru_maxrss is in KiB on Linux, bytes on macOS.
        scale = 2**20 if sys.platform == "darwin" else 2**10
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    except (ImportError, OSError):
        pass
    return ProcessState(
        pid=os.getpid(),
        uptime_secs=round(time.monotonic() - STARTED, 1),
        rss_mib=None if rss is None else round(rss, 1),
        peak_rss_mib=None if peak is None else round(peak, 1),
    )


class StatusOutput(ToolOutput):
    version: str
    inflight: int = Field(description="Shared executions running now.")
    limits: dict[str, LimitState]
    clients: dict[str, LimitState] = Field(
        description="Per-client limits of the clients with calls in flight or waiting, by client "
        "id (MCP session, REST X-Client-Id, or stdio); idle clients are not listed."
    )
    cache: dict[str, Any]
    providers: dict[str, dict[str, Any]]
    timeouts: dict[str, Any]
    calls: dict[str, Any]
    health: list[str] = Field(description="Problems the health check sees now; empty when fine.")
    shared: dict[str, Any] | None = Field(
        None,
        description="With EXAI_REDIS_URL: Redis state (shared/degraded), limits on all servers.",
    )
    process: ProcessState


def shared_problems(services: Services) -> list[str]:
    """Redis trouble, as the health list shows it."""
    if services.shared is None or not services.shared.link.degraded:
        return []
    return [
        f"Redis at {services.shared.link.url} is unreachable: this server runs on its own "
        "state (degraded) and reconnects in the background"
    ]


async def status(_args: StatusInput, services: Services) -> StatusOutput:
    pool = services.pool
    limiters = [services.pipeline.global_limit, *pool.limits.values()]
    shared = await services.shared.snapshot() if services.shared is not None else None
    for breaker in pool.breakers.values():
        refresh = getattr(breaker, "refresh", None)  # a breaker shared with other servers
        if refresh is not None:
            await refresh()
    providers: dict[str, dict[str, Any]] = {}
    for name in SPECS:
        configured = name in pool.providers
        entry: dict[str, Any] = {"configured": configured}
        if configured:
            entry["base_url"] = pool.providers[name].base_url
            entry["available_for_auto"] = pool.available(name)
            entry["breaker"] = pool.breakers[name].stats()
            entry.update(pool.stats[name].snapshot())
        providers[name] = entry
    return StatusOutput(
        version=__version__,
        inflight=len(services.pipeline.flights),
        limits={
            lim.name: LimitState(**lim.stats(), holders=[h.describe() for h in lim.holders()])
            for lim in limiters
        },
        clients={
            client: LimitState(**lim.stats(), holders=[h.describe() for h in lim.holders()])
            for client, lim in services.pipeline.client_limits.clients().items()
        },
        cache=services.pipeline.cache.stats(),
        providers=providers,
        timeouts=services.timeouts.as_dict(),
        calls=services.pipeline.stats(),
        health=[*services.health.problems().values(), *shared_problems(services)],
        shared=shared,
        process=process_state(),
    )


TOOL = ToolSpec(
    name="status",
    title="Server status",
    description=(
        "Health of this exai-mcp server: calls in flight, concurrency limits and who holds "
        "them (also per client), cache, provider breakers and error counts, timeouts, latency. "
        "Free; no model call."
    ),
    input_model=StatusInput,
    output_model=StatusOutput,
    annotations=ToolAnnotations(
        title="Server status",
        read_only_hint=True,
        destructive_hint=False,
        idempotent_hint=True,
        open_world_hint=False,
    ),
    direct=status,
)
