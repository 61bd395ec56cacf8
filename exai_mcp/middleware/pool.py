"""Every configured provider with what the pipeline keeps about it: breaker, limit, counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exai_mcp.middleware.breaker import CircuitBreaker
from exai_mcp.middleware.limits import Limiter
from exai_mcp.middleware.metrics import ProviderStats
from exai_mcp.providers.base import Provider


@dataclass
class ProviderPool:
    providers: Mapping[str, Provider]
    """In preference order for model=auto."""
    breakers: Mapping[str, CircuitBreaker]
    limits: Mapping[str, Limiter]
    attempt_timeouts: Mapping[str, float]
    stats: dict[str, ProviderStats] = field(init=False)

    def __post_init__(self) -> None:
        self.stats = {name: ProviderStats() for name in self.providers}

    def available(self, provider: str) -> bool:
        """False while the provider is paused (failing, or its key was rejected)."""
        breaker = self.breakers.get(provider)
        return breaker is None or breaker.available()
