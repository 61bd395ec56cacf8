"""Counters the `status` tool reports: calls and their latency, provider requests and errors."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from exai_mcp.middleware.call import Call, Next


@dataclass(slots=True)
class CallStats:
    count: int = 0
    errors: int = 0
    _durations: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def record(self, seconds: float, *, ok: bool) -> None:
        self.count += 1
        if not ok:
            self.errors += 1
        self._durations.append(seconds)

    def percentile(self, q: float) -> float | None:
        if not self._durations:
            return None
        ordered = sorted(self._durations)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    def snapshot(self) -> dict[str, object]:
        p50, p95 = self.percentile(0.5), self.percentile(0.95)
        return {
            "count": self.count,
            "errors": self.errors,
            "p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "p95_ms": None if p95 is None else round(p95 * 1000, 1),
        }


@dataclass(slots=True)
class ProviderStats:
    requests: int = 0
    retries: int = 0
    successes: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "successes": self.successes,
            "errors": dict(self.errors),
        }


class CountCalls:
    """Layer: every call's outcome and its time from arrival, whatever happened below."""

    def __init__(self, stats: CallStats) -> None:
        self.stats = stats

    async def __call__(self, call: Call, call_next: Next) -> object:
        ok = False
        try:
            result = await call_next(call)
            ok = True
            return result
        finally:
            self.stats.record(call.deadline.elapsed(), ok=ok)
