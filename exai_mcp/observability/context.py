"""What one caller's call has come to so far, visible to every layer and log line below it.

`ObserveCall` sets it; the layers below add to it; the JSON log formatter reads its ids. A
shared execution runs in a task started from its leader's context, so what the execution
does (provider requests, retries, tokens) is added to the leader's record; a caller that
joined it sees `coalesced`.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class CallRecord:
    tool: str
    request_id: str
    client: str
    shared: bool = False
    """The call waited for a shared execution (its own, or an identical call's)."""
    led: bool = False
    """The shared execution it waited for was its own (set from inside the execution)."""
    provider_requests: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    trace_id: str | None = None
    """The call's trace, kept for its log line (written after its span has ended)."""

    @property
    def coalesced(self) -> bool:
        """Answered by an identical call's execution, not by one of its own."""
        return self.shared and not self.led


current_call: ContextVar[CallRecord | None] = ContextVar("exai_current_call", default=None)
