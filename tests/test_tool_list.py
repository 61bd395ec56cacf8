"""What the assistant pays for in context: `tools/list` as a client receives it."""

from __future__ import annotations

import json
from pathlib import Path

from mcp import Client

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
