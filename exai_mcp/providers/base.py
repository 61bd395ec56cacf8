"""The one async interface every model provider implements.

Tools and middleware speak only these types; each provider module translates its SDK's
requests, responses and exceptions at this boundary (see `exai_mcp.errors`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

TokenCallback = Callable[[int, bool], None]
"""Called as tokens stream in: (tokens received so far, whether the model is still thinking,
i.e. streaming `reasoning_content` before its answer). Cheap: no awaiting."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion: a system prompt, the user's content, and sampling options."""

    model: str
    system: str
    user: str
    temperature: float | None = None

    def messages(self) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        out.append({"role": "user", "content": self.user})
        return out


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    model: str
    provider: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


class Provider(Protocol):
    """A configured model provider reached over HTTP."""

    name: str
    """Short name used in model prefixes and limits: "kimi" or "glm"."""
    key_variable: str
    """The environment variable that holds the key (named in errors, never the key itself)."""
    base_url: str

    async def complete(
        self, request: ChatRequest, *, timeout: float, on_tokens: TokenCallback | None = None
    ) -> ChatResult:
        """Stream one completion. Raises only `exai_mcp.errors.ProviderError` subclasses;
        cancellation closes the HTTP request so the provider stops working on it."""
        ...

    async def list_models(self, *, timeout: float) -> list[str]:
        """The model ids the provider's `/models` endpoint reports (used by `doctor`)."""
        ...

    async def aclose(self) -> None: ...
