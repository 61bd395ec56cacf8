"""What the assistant pays for in context: `tools/list` as a client receives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client
from pydantic import BaseModel, Field

from exai_mcp.tools.base import tool_schema
from exai_mcp.tools.workflow_kinds import KIND_NAMES
from tests.conftest import stdio_params


async def test_tools_list_over_stdio_is_small_annotated_and_says_when_to_use_each_tool(
    tmp_path: Path,
) -> None:
    async with Client(stdio_params({"EXAI_STATE_DB": str(tmp_path / "s.db")})) as client:
        listed = await client.list_tools()
        instructions = client.instructions
    tools = {t.name: t for t in listed.tools}
    wire = json.dumps(
        [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listed.tools],
        separators=(",", ":"),
    )
    assert len(wire) < 10_000, len(wire)
    assert set(tools) == {"analyze", "workflow", "status"}
    for kind in KIND_NAMES:
        assert kind in tools["workflow"].description or kind in json.dumps(
            tools["workflow"].input_schema
        )
    assert "second opinion" in tools["analyze"].description
    assert tools["status"].annotations.read_only_hint is True
    assert tools["status"].annotations.open_world_hint is False
    assert tools["analyze"].annotations.open_world_hint is True
    assert all(t.output_schema for t in tools.values())
    assert instructions and "workflow" in instructions and "analyze" in instructions


async def test_every_listed_schema_is_self_contained(tmp_path: Path) -> None:
    """Clients such as VS Code Copilot, Claude Desktop and the Inspector's form drop `$defs` or
    cannot resolve `$ref`: a schema that relies on them breaks the fields it points at."""
    async with Client(stdio_params({"EXAI_STATE_DB": str(tmp_path / "s.db")})) as client:
        listed = await client.list_tools()
    for tool in listed.tools:
        for schema in (tool.input_schema, tool.output_schema):
            wire = json.dumps(schema)
            assert "$ref" not in wire and "$defs" not in wire, (tool.name, wire[:200])
    workflow = next(t for t in listed.tools if t.name == "workflow")
    issue = workflow.input_schema["properties"]["issues_found"]["items"]
    assert {"severity", "description"} <= set(issue["properties"])


class Point(BaseModel):
    x: int


class Segment(BaseModel):
    start: Point = Field(description="Where it begins.")
    ends: list[Point]


class Tree(BaseModel):
    children: list[Tree]


def test_inlined_references_keep_the_fields_own_keywords() -> None:
    schema = tool_schema(Segment)
    assert "$defs" not in schema
    assert schema["properties"]["start"]["description"] == "Where it begins."
    assert schema["properties"]["start"]["properties"]["x"]["type"] == "integer"
    assert schema["properties"]["ends"]["items"]["required"] == ["x"]


def test_a_recursive_model_is_refused_when_the_tool_is_defined() -> None:
    with pytest.raises(ValueError, match="Tree: cannot inline the schema reference"):
        tool_schema(Tree)
