"""What a tool is: its pydantic input and output models (the schema), and its handler.

A tool's input model is its JSON schema, its validation and its documentation (the field
descriptions are what the assistant reads). `prepare` validates everything it can before any
work starts and returns a `Prepared` call for the pipeline; `direct` tools (`status`) bypass the
pipeline entirely.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from exai_mcp.files import estimate_tokens
from exai_mcp.middleware.context import CallContext, Prepared
from exai_mcp.services import Services


def compact_schema(schema: dict[str, Any]) -> None:
    """Drop the titles pydantic derives from field names: they only repeat the names, and
    every character of `tools/list` costs the assistant context."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)


class ToolInput(BaseModel):
    """Inputs reject unknown fields, so a misspelt argument is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=compact_schema)


class Usage(BaseModel):
    model_config = ConfigDict(json_schema_extra=compact_schema)

    prompt_tokens: int = Field(description="Tokens the provider counted in the prompt.")
    completion_tokens: int = Field(description="Tokens the provider generated.")


class ToolOutput(BaseModel):
    model_config = ConfigDict(json_schema_extra=compact_schema)

    def to_text(self) -> str:
        """The human-readable result (the `content` text); structured data goes alongside."""
        return self.model_dump_json(indent=2)


class AnswerOutput(ToolOutput):
    """An answer that went through the pipeline, and so may come from the result cache."""

    cached: bool = Field(False, description="True when served from the result cache.")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    title: str
    description: str
    input_model: type[ToolInput]
    output_model: type[ToolOutput]
    annotations: ToolAnnotations
    prepare: Callable[[Any, Services, CallContext], Awaitable[Prepared[Any]]] | None = None
    direct: Callable[[Any, Services], Awaitable[ToolOutput]] | None = None


def cap_reply(text: str, max_tokens: int) -> tuple[str, bool]:
    """Cut a reply over the output budget, saying so: never a silent truncation."""
    total = estimate_tokens(text)
    if total <= max_tokens:
        return text, False
    kept = text[: max_tokens * 4]
    cut_at = kept.rfind("\n")
    if cut_at > len(kept) // 2:
        kept = kept[:cut_at]
    marker = (
        f"\n\n[exai-mcp: reply cut at about {max_tokens} of {total} estimated tokens "
        "(EXAI_MAX_OUTPUT_TOKENS). To get the rest, ask a narrower question, send fewer files, "
        "or continue this thread with continuation_id and ask for the remaining part.]"
    )
    return kept + marker, True
