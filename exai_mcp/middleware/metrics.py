"""Counters the `status` tool and `/metrics` both report: one record per event, read by both.

Calls and provider requests are counted here, where the pipeline records them; the
Prometheus collector (`exai_mcp.observability.metrics`) reads these objects at scrape time.
The histograms are plain bucket counts (`Buckets`), turned into Prometheus histogram samples
only when something scrapes them, so a server that serves no /metrics never loads
`prometheus_client` (about 0.9 MiB resident). Each server has its own, so several servers in
one process never share a series.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass, field

import anyio

from exai_mcp.middleware.call import Call, Next

CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600)
"""Seconds, from 5 ms (a cache hit) to 600 s (beyond any server deadline)."""

BUCKET_BOUNDS = (*(float(b) for b in CALL_BUCKETS), float("inf"))
"""Every bucket's upper bound, +Inf last, as a Prometheus histogram has them."""

OUTCOMES = ("ok", "error", "cancelled", "cached")


class Buckets:
    """One histogram series: observations per bucket (not cumulative), their sum, and when the
    series began (Prometheus' `_created`). An observation goes to the first bucket whose upper
    bound is at least its value, as in `prometheus_client.Histogram`."""

    __slots__ = ("counts", "created", "sum")

    def __init__(self) -> None:
        self.counts = [0.0] * len(BUCKET_BOUNDS)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.sum += value
        self.counts[bisect_left(BUCKET_BOUNDS, value)] += 1

    @property
    def count(self) -> float:
        return sum(self.counts)


class LabeledBuckets:
    """Histogram series by one label value, each begun when its value is first observed."""

    __slots__ = ("series",)

    def __init__(self) -> None:
        self.series: dict[str, Buckets] = {}

    def labels(self, value: str) -> Buckets:
        series = self.series.get(value)
        if series is None:
            series = self.series[value] = Buckets()
        return series

    def observe(self, value: str, seconds: float) -> None:
        self.labels(value).observe(seconds)


class LimitWaits:
    """Seconds each acquisition waited for its permit, by limit (0 when one was free)."""

    __slots__ = ("histogram",)

    def __init__(self) -> None:
        self.histogram = LabeledBuckets()

    def observe(self, limit: str, seconds: float) -> None:
        self.histogram.observe(limit, seconds)


@dataclass(slots=True)
class CallStats:
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(tool, outcome) -> calls finished so; outcome is one of `OUTCOMES`."""
    in_flight: int = 0
    durations: LabeledBuckets = field(default_factory=LabeledBuckets)
    """By tool: exai_tool_call_duration_seconds."""
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def record(self, tool: str, seconds: float, *, outcome: str) -> None:
        self.outcomes[tool, outcome] += 1
        self.durations.observe(tool, seconds)
        self._recent.append(seconds)

    @property
    def count(self) -> int:
        return sum(self.outcomes.values())

    @property
    def errors(self) -> int:
        return sum(n for (_tool, outcome), n in self.outcomes.items() if outcome == "error")

    def percentile(self, q: float) -> float | None:
        if not self._recent:
            return None
        ordered = sorted(self._recent)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    def snapshot(self) -> dict[str, object]:
        p50, p95 = self.percentile(0.5), self.percentile(0.95)
        return {
            "count": self.count,
            "errors": self.errors,
            "in_flight": self.in_flight,
            "p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "p95_ms": None if p95 is None else round(p95 * 1000, 1),
        }


@dataclass(slots=True)
class ProviderStats:
    """One provider's requests. `status` of a request is "ok", "cancelled" or the error kind."""

    by_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(model, status) -> requests; the model as asked for, folded by the reader."""
    retry_reasons: Counter[str] = field(default_factory=Counter)
    tokens: Counter[str] = field(default_factory=Counter)
    """"input" and "output" tokens, as the GenAI semantic conventions name them."""
    durations: Buckets = field(default_factory=Buckets)
    """exai_provider_request_duration_seconds, labelled with the provider when scraped."""

    def record_request(
        self,
        model: str,
        status: str,
        seconds: float,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        self.by_status[model, status] += 1
        self.durations.observe(seconds)
        if input_tokens:
            self.tokens["input"] += input_tokens
        if output_tokens:
            self.tokens["output"] += output_tokens

    def record_retry(self, exc: BaseException) -> None:
        self.retry_reasons[getattr(exc, "kind", type(exc).__name__)] += 1

    @property
    def requests(self) -> int:
        return sum(self.by_status.values())

    @property
    def successes(self) -> int:
        return sum(n for (_model, status), n in self.by_status.items() if status == "ok")

    @property
    def retries(self) -> int:
        return sum(self.retry_reasons.values())

    @property
    def errors(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (_model, status), n in self.by_status.items():
            if status not in ("ok", "cancelled"):
                out[status] += n
        return out

    def snapshot(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "successes": self.successes,
            "errors": dict(self.errors),
            "tokens": dict(self.tokens),
        }


def outcome_of(result: object, error: BaseException | None) -> str:
    """A finished call's outcome, one of `OUTCOMES`."""
    if error is None:
        return "cached" if getattr(result, "cached", False) else "ok"
    return "cancelled" if isinstance(error, anyio.get_cancelled_exc_class()) else "error"


class CountCalls:
    """Layer: every call's outcome and its time from arrival, whatever happened below."""

    def __init__(self, stats: CallStats) -> None:
        self.stats = stats

    async def __call__(self, call: Call, call_next: Next) -> object:
        result: object = None
        error: BaseException | None = None
        self.stats.in_flight += 1
        try:
            result = await call_next(call)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.stats.in_flight -= 1
            self.stats.record(call.tool, call.deadline.elapsed(), outcome=outcome_of(result, error))
