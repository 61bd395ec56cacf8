"""What travels down the pipeline: one call, the tool's plan for it, and the shared answer.

A tool does not call a provider itself. It turns validated arguments into a `Plan`: what
makes two calls identical (`key`), what to ask the expert (`ask`, or nothing for a local
answer), and how to turn the shared `Answer` into this caller's reply (`finish`). The layers
in `pipeline.py` carry the `Call` from the client's request to the provider and back; each
is `async (call, call_next)` and may hand a changed copy of the call to the next one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from exai_mcp.middleware.deadline import Deadline
    from exai_mcp.middleware.progress import SendProgress
    from exai_mcp.providers.base import ChatRequest
    from exai_mcp.providers.catalog import ResolvedModel

Out = TypeVar("Out")


@dataclass(frozen=True, slots=True)
class ExpertRequest:
    """The one expert call a tool asks for; the pipeline turns it into a chat request.

    The user message is `intro`, then the `files` (embedded whole, within what the chosen
    model's context window leaves), then `closing`.
    """

    system: str
    intro: str
    files: tuple[str, ...] = ()
    files_heading: str = ""
    closing: str = ""
    temperature: float | None = None
    budget: float = 0.0
    """Seconds for the provider path (the tool timeout, or the expert timeout)."""
    budget_setting: str = "WORKFLOW_TOOL_TIMEOUT_SECS"
    """The variable that sets `budget`, named when the budget runs out."""
    files_required: bool = False
    """The files are all there is to ask about: when none can be sent, nothing is."""
    shorten: str = "send a shorter text or fewer files"
    """What the caller can do when the prompt is too large for the model."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An expert's answer as every caller of an identical call receives it."""

    text: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    duration_ms: int
    truncated: bool = False
    files_included: tuple[str, ...] = ()
    files_left_out: tuple[tuple[str, str], ...] = ()
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Plan(Generic[Out]):
    """A validated call, ready to run.

    `key` is what makes two calls identical (validated arguments with defaults, the resolved
    model, file stamps, the thread's state before the call); `None` means the call is neither
    shared nor cached. `finish` runs once per caller, after the shared part: it is where a
    caller's own state (its thread) is written, so callers sharing one answer never share a
    thread.
    """

    finish: Callable[[Answer | None], Awaitable[Out]]
    key: dict[str, Any] | None = None
    ask: ExpertRequest | None = None
    model: ResolvedModel | None = None
    auto: bool = False
    """The client asked for `auto`: another provider may answer if this one cannot."""


@dataclass(frozen=True, slots=True)
class Call:
    """One request (or one shared execution) as a layer sees it."""

    tool: str
    request_id: str
    deadline: Deadline
    prepare: Callable[[], Awaitable[Plan[Any]]]
    send_progress: SendProgress | None = None
    client: str = "stdio"
    """Who sent the call: an MCP session, a REST client; per-client limits and status use it."""
    report: Callable[[str], None] = lambda _message: None
    """Progress for the client(s): cheap, synchronous, coalesced by the reporter."""
    plan: Plan[Any] | None = None
    queued: bool = False
    """It waited for its client's permit (`ClientLimit`), so the cache may have its answer now."""
    key: str | None = None
    """`call_key` of the plan's key: the name identical calls share."""
    model: ResolvedModel | None = None
    chat: ChatRequest | None = None

    def replace(self, **changes: Any) -> Call:
        return dataclasses.replace(self, **changes)

    @property
    def ask(self) -> ExpertRequest:
        assert self.plan is not None and self.plan.ask is not None, "layer below the tool layer"
        return self.plan.ask

    @property
    def provider(self) -> str:
        assert self.model is not None, "layer below routing"
        return self.model.provider


def call_key(tool: str, material: dict[str, Any]) -> str:
    """sha256 of canonical JSON: key order and whitespace in the client's JSON do not matter."""
    canonical = json.dumps(
        {"tool": tool, **material}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


Next = Callable[[Call], Awaitable[Any]]


class Layer(Protocol):
    async def __call__(self, call: Call, call_next: Next) -> Any: ...
