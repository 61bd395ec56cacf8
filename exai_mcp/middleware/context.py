"""What the pipeline hands to a tool for one request, and what a tool hands back to it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from exai_mcp.middleware.deadline import Deadline

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallContext:
    """One request (or one shared execution) as the layers below the pipeline see it."""

    request_id: str
    tool: str
    deadline: Deadline
    report: Callable[[str], None]
    """Progress for the client(s): cheap, synchronous, coalesced by the reporter."""


@dataclass(frozen=True, slots=True)
class Prepared(Generic[T]):
    """A validated call, ready to run.

    `key` is what makes two calls identical (the validated arguments with defaults applied,
    the resolved model, any thread state the answer depends on); `None` means the call is
    neither shared nor cached (it changes state, or costs nothing).
    """

    key: dict[str, Any] | None
    execute: Callable[[CallContext], Awaitable[T]]
