"""What a tool is: its pydantic input and output models (the schema), and its handler.

A tool's input model is its JSON schema, its validation and its documentation (the field
descriptions are what the assistant reads). `plan` validates everything it can before any
work starts and returns a `Plan` for the pipeline (what to ask the expert, and how to finish
the call for its caller); `direct` tools (`status`) bypass the pipeline entirely.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, field_validator

from exai_mcp.errors import FileAccessError
from exai_mcp.files import FileStamp
from exai_mcp.middleware.call import Plan
from exai_mcp.services import Services


def compact_schema(schema: dict[str, Any]) -> None:
    """Drop the titles pydantic derives from field names: they only repeat the names, and
    every character of `tools/list` costs the assistant context."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)


MAX_ID_CHARS = 100
MAX_MODEL_CHARS = 200
_MODEL_NAME = re.compile(rf"[^\s\x00-\x1f\x7f]{{1,{MAX_MODEL_CHARS}}}")


def tool_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema as `tools/list` sends it: self-contained, with every
    `#/$defs/...` reference replaced by its definition.

    Several popular clients (VS Code Copilot, Claude Desktop, Cursor, the Inspector's form,
    Bedrock AgentCore) drop `$defs` or cannot resolve references, which breaks any field whose
    type is a nested model. Our models are not recursive, so inlining only repeats a few small
    definitions; a recursive one fails here, at start-up, rather than in a client.
    """
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any, expanding: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [inline(item, expanding) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" not in node:
            return {key: inline(value, expanding) for key, value in node.items()}
        ref = node["$ref"]
        name = ref.removeprefix("#/$defs/")
        if name not in definitions or name in expanding:
            raise ValueError(f"{model.__name__}: cannot inline the schema reference {ref}")
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        target = inline(definitions[name], expanding | {name})
        return {**target, **inline(siblings, expanding)}

    return inline(schema, frozenset())


async def check_files(services: Services, **fields: Sequence[str]) -> list[FileStamp]:
    """Check the paths of the named arguments (each distinct path once, in order) and stamp
    them; a bad one is an error naming the argument and the place, like `relevant_files[2]`."""
    paths = list(dict.fromkeys(path for given in fields.values() for path in given))
    try:
        return await services.files.snapshot_async(paths)
    except FileAccessError as exc:
        where = next(
            f"{name}[{index}]"
            for name, given in fields.items()
            for index, path in enumerate(given)
            if path == exc.path
        )
        raise FileAccessError(exc.path, exc.reason, field=where) from None


class ToolInput(BaseModel):
    """Inputs reject unknown fields, so a misspelt argument is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=compact_schema)

    @field_validator("continuation_id", mode="before", check_fields=False)
    @classmethod
    def _blank_means_none(cls, value: Any) -> Any:
        # Form-based clients (the Inspector's form) send "" for an optional field left empty.
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and len(value) > MAX_ID_CHARS:
            raise ValueError(
                f"is {len(value)} characters long; the ids this server gives out have 36"
            )
        return value

    @field_validator("model", check_fields=False)
    @classmethod
    def _model_name_shape(cls, value: str) -> str:
        # Sent on to the provider and written to logs: no spaces, controls or essays.
        name = value.strip()
        if not _MODEL_NAME.fullmatch(name):
            raise ValueError(
                f"must be 'auto', a model id or alias, or 'kimi:<id>' / 'glm:<id>': up to "
                f"{MAX_MODEL_CHARS} characters, with no spaces or control characters"
            )
        return name


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
