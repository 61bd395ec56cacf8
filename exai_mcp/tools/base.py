"""What a tool is: its pydantic input and output models (the schema), and its handler.

A tool's input model is its JSON schema, its validation and its documentation (the field
descriptions are what the assistant reads). `plan` validates everything it can before any
work starts and returns a `Plan` for the pipeline (what to ask the expert, and how to finish
the call for its caller); `direct` tools (`status`) bypass the pipeline entirely.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from exai_mcp.middleware.call import Plan
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
    plan: Callable[[Any, Services], Awaitable[Plan[Any]]] | None = None
    direct: Callable[[Any, Services], Awaitable[ToolOutput]] | None = None
