"""Prometheus metrics: one collector that reads the pipeline's own counters at scrape time.

    registry = metrics_registry(lambda: services)     # per server: never the global registry
    body, content_type = exposition(registry, accept_header)

Nothing here counts anything itself. Calls, provider requests, retries, tokens and permit
waits are counted once where they happen (`exai_mcp.middleware.metrics`), and the limiters,
breakers, cache, single-flight and health check keep their own state; `status` and `/metrics`
read the same objects. The histograms are plain bucket counts there, turned into the samples
`prometheus_client.Histogram` would give (`_bucket`, `_count`, `_sum`, `_created`) here, so
only a server that serves /metrics imports this module and `prometheus_client`.

Label values are bounded: tools and limits are fixed names, providers come from the registry,
models outside the model table are folded into `other`, outcomes and statuses are kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exai_mcp import __version__
from exai_mcp.middleware.breaker import BreakerState
from exai_mcp.middleware.metrics import (
    BUCKET_BOUNDS,
    OUTCOMES,
    Buckets,
    LabeledBuckets,
    LimitWaits,
)
from exai_mcp.providers.catalog import KNOWN_MODELS

if TYPE_CHECKING:
    from exai_mcp.services import Services

BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
HEALTH_KINDS = ("permit_count_mismatch", "permit_held_past_deadline")
TABLE_MODELS = frozenset(m.id for m in KNOWN_MODELS)
OTHER_MODEL = "other"


def histogram(
    name: str, documentation: str, series: Iterable[tuple[dict[str, str], Buckets]]
) -> Metric:
    """A histogram family with the samples `prometheus_client.Histogram` gives for the same
    observations: cumulative `_bucket` per bound (`le`, +Inf last), `_count`, `_sum` and (unless
    created series are disabled, as prometheus_client allows) `_created`."""
    family = Metric(name, documentation, "histogram")
    created = getattr(prometheus_metrics, "_use_created", True)
    les = [floatToGoString(bound) for bound in BUCKET_BOUNDS]
    for labels, buckets in series:
        total = 0.0
        for le, n in zip(les, buckets.counts, strict=True):
            total += n
            family.add_sample(f"{name}_bucket", {**labels, "le": le}, total)
        family.add_sample(f"{name}_count", dict(labels), total)
        family.add_sample(f"{name}_sum", dict(labels), buckets.sum)
        if created:
            family.add_sample(f"{name}_created", dict(labels), buckets.created)
    return family


def by_label(label: str, series: LabeledBuckets) -> list[tuple[dict[str, str], Buckets]]:
    return [({label: value}, buckets) for value, buckets in list(series.series.items())]


def model_label(model: str) -> str:
    return model if model in TABLE_MODELS else OTHER_MODEL


def health_kind(key: str) -> str:
    """`HealthMonitor.problems()` keys are "<limiter>:count" or "<limiter>:<holder serial>"."""
    return HEALTH_KINDS[0] if key.rsplit(":", 1)[-1] == "count" else HEALTH_KINDS[1]


class ServerCollector(Collector):
    """Everything a scrape shows, read from the running server's services."""

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("exai_build_info", "This server's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        services = self._services()
        if services is None:  # starting or stopped: nothing else to read
            return
        yield from self._calls(services)
        yield from self._limits(services)
        yield from self._sharing(services)
        yield from self._providers(services)
        yield from self._health(services)

    def _calls(self, services: Services) -> Iterable[Metric]:
        stats = services.pipeline.calls
        calls = CounterMetricFamily(
            "exai_tool_calls",
            "Tool calls finished, by tool and outcome.",
            labels=["tool", "outcome"],
        )
        # Every outcome of every tool seen, zeros included, so rates exist from the start.
        for tool in sorted({tool for tool, _outcome in stats.outcomes}):
            for outcome in OUTCOMES:
                calls.add_metric([tool, outcome], stats.outcomes[tool, outcome])
        yield calls
        yield histogram(
            "exai_tool_call_duration_seconds",
            "Time from a tool call's arrival to its answer, by tool.",
            by_label("tool", stats.durations),
        )
        yield GaugeMetricFamily(
            "exai_inflight_calls", "Tool calls in the pipeline now.", value=stats.in_flight
        )
        yield GaugeMetricFamily(
            "exai_server_deadline_seconds",
            "The server deadline every call runs within (ceil(1.5 x tool timeout)).",
            value=services.timeouts.server_deadline,
        )

    def _limits(self, services: Services) -> Iterable[Metric]:
        limiters = [services.pipeline.global_limit, *services.pool.limits.values()]
        permits = GaugeMetricFamily(
            "exai_limit_permits", "Permits of each limit.", labels=["limit"]
        )
        in_use = GaugeMetricFamily(
            "exai_limit_permits_in_use", "Permits held now.", labels=["limit"]
        )
        waiting = GaugeMetricFamily(
            "exai_limit_waiting", "Attempts waiting for a permit now.", labels=["limit"]
        )
        oldest = GaugeMetricFamily(
            "exai_limit_oldest_hold_seconds",
            "Age of the oldest permit held (0 when none is).",
            labels=["limit"],
        )
        for limiter in limiters:
            holders = limiter.holders()
            permits.add_metric([limiter.name], limiter.total)
            in_use.add_metric([limiter.name], limiter.in_use())
            waiting.add_metric([limiter.name], limiter.waiting())
            oldest.add_metric([limiter.name], holders[0].age() if holders else 0.0)
        yield from (permits, in_use, waiting, oldest)
        yield histogram(
            "exai_limit_wait_seconds",
            "Time a provider attempt waited for a permit, by limit.",
            by_label("limit", services.pipeline.observability.limit_waits.histogram),
        )

    def _sharing(self, services: Services) -> Iterable[Metric]:
        pipeline = services.pipeline
        yield CounterMetricFamily(
            "exai_singleflight_coalesced",
            "Calls that joined an identical call's execution instead of starting one.",
            value=pipeline.flights.coalesced,
        )
        yield CounterMetricFamily(
            "exai_cache_hits", "Calls answered from the result cache.", value=pipeline.cache.hits
        )
        yield CounterMetricFamily(
            "exai_cache_misses",
            "Cache lookups that found nothing.",
            value=pipeline.cache.misses,
        )
        yield GaugeMetricFamily(
            "exai_cache_entries", "Answers in the result cache now.", value=len(pipeline.cache)
        )

    def _providers(self, services: Services) -> Iterable[Metric]:
        pool = services.pool
        requests = CounterMetricFamily(
            "exai_provider_requests",
            "Provider HTTP requests, by provider, model and how they ended (ok, cancelled, or "
            "the error kind).",
            labels=["provider", "model", "status"],
        )
        retries = CounterMetricFamily(
            "exai_provider_retries",
            "Retried attempts, by the error kind.",
            labels=["provider", "reason"],
        )
        tokens = CounterMetricFamily(
            "exai_provider_tokens", "Tokens, input and output.", labels=["provider", "kind"]
        )
        breaker = GaugeMetricFamily(
            "exai_breaker_state", "0 closed, 1 half-open, 2 open.", labels=["provider"]
        )
        for name, stats in pool.stats.items():
            folded: dict[tuple[str, str], int] = {}
            for (model, status), n in stats.by_status.items():
                key = (model_label(model), status)
                folded[key] = folded.get(key, 0) + n
            for (model, status), n in sorted(folded.items()):
                requests.add_metric([name, model, status], n)
            for reason, n in sorted(stats.retry_reasons.items()):
                retries.add_metric([name, reason], n)
            for kind in ("input", "output"):
                tokens.add_metric([name, kind], stats.tokens[kind])
            breaker.add_metric([name], BREAKER_VALUES[pool.breakers[name].state])
        durations = histogram(
            "exai_provider_request_duration_seconds",
            "Time of one provider request (one attempt), from holding its permits.",
            [({"provider": name}, stats.durations) for name, stats in pool.stats.items()],
        )
        yield from (requests, retries, tokens, breaker, durations)

    def _health(self, services: Services) -> Iterable[Metric]:
        counts = dict.fromkeys(HEALTH_KINDS, 0)
        for key in services.health.problems():
            counts[health_kind(key)] += 1
        problems = GaugeMetricFamily(
            "exai_health_problems", "Problems the health check sees now.", labels=["kind"]
        )
        for kind, n in counts.items():
            problems.add_metric([kind], n)
        yield problems


def metrics_registry(services: Callable[[], Services | None]) -> CollectorRegistry:
    """A registry of its own for one server, so servers in one process never collide."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(services))
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The scrape body in the format the scraper asked for (Prometheus text by default)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


__all__ = ["OUTCOMES", "LimitWaits", "ServerCollector", "exposition", "metrics_registry"]
