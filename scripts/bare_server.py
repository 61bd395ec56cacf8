"""A bare `mcp` low-level server: the benchmark's floor for MCP over stdio.

    python scripts/bare_server.py        # serves MCP on stdio until stdin closes

Two tools, no middleware, no validation beyond what the SDK does:

- `noop` answers at once. `scripts/bench.py` compares exai-mcp's calls per second with this
  one's: whatever exai-mcp costs above it is its own pipeline, tool logic and provider call.
- `memory` answers with this process's resident memory, for the benchmark's memory row.
- `relay` sends the text to an OpenAI-compatible provider (`RELAY_BASE_URL`) with
  `openai.AsyncOpenAI`, streaming exactly as exai-mcp's providers do, and returns the answer.
  It is the control that separates the cost of the provider path (SDK, HTTP, the provider)
  from the cost of exai-mcp's pipeline.
- `replay` (listed only when `BARE_REPLAY` names a JSON file holding an `output_schema` and a
  `result`) answers with that stored `tools/call` result under that output schema: the floor
  for any tool returning the same result, which the client parses and checks against the
  schema. The benchmark stores one of exai-mcp's cache hits there.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import openai
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
)

INPUT_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "model": {"type": "string"}},
    "additionalProperties": False,
}
TOOLS = [
    Tool(name="noop", description="Does nothing and answers at once.", input_schema=INPUT_SCHEMA),
    Tool(
        name="memory",
        description="This process's resident memory, in MiB.",
        input_schema=INPUT_SCHEMA,
    ),
    Tool(
        name="relay",
        description="Asks the provider at RELAY_BASE_URL (streaming) and returns its answer.",
        input_schema=INPUT_SCHEMA,
    ),
]


def replay_from(path: str | None) -> tuple[Tool, CallToolResult] | None:
    """The `replay` tool and the result it answers with, from BARE_REPLAY's file."""
    if not path:
        return None
    with open(path, encoding="utf-8") as stored:
        replay = json.load(stored)
    tool = Tool(
        name="replay",
        description="Answers with a stored result.",
        input_schema=INPUT_SCHEMA,
        output_schema=replay["output_schema"],
    )
    return tool, CallToolResult.model_validate(replay["result"])


REPLAY = replay_from(os.environ.get("BARE_REPLAY"))
if REPLAY is not None:
    TOOLS.append(REPLAY[0])


def resident_mib() -> float:
    """Resident memory now (Linux /proc), the benchmark's memory floor for an MCP server."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def text_result(text: str, *, error: bool = False) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=error)


@asynccontextmanager
async def lifespan(_server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
    base_url = os.environ.get("RELAY_BASE_URL")
    client = (
        openai.AsyncOpenAI(
            api_key=os.environ.get("RELAY_API_KEY", "x"), base_url=base_url, max_retries=0
        )
        if base_url
        else None
    )
    try:
        yield {"client": client}
    finally:
        if client is not None:
            await client.close()


async def relay(client: openai.AsyncOpenAI, args: dict[str, Any]) -> str:
    stream = await client.chat.completions.create(
        model=str(args.get("model") or "kimi-k2-0905-preview"),
        messages=[{"role": "user", "content": str(args.get("text", ""))}],
        stream=True,
        stream_options={"include_usage": True},
        timeout=30,
    )
    parts: list[str] = []
    try:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
    finally:
        await stream.close()
    return "".join(parts)


async def list_tools(
    _ctx: ServerRequestContext[Any], _params: PaginatedRequestParams | None
) -> ListToolsResult:
    return ListToolsResult(tools=TOOLS)


async def call_tool(
    ctx: ServerRequestContext[Any], params: CallToolRequestParams
) -> CallToolResult:
    args = params.arguments or {}
    if params.name == "noop":
        return text_result(f"ok: {args.get('text', '')}")
    if params.name == "replay" and REPLAY is not None:
        return REPLAY[1]
    if params.name == "memory":
        return text_result(f"{resident_mib():.1f}")
    if params.name == "relay":
        client = ctx.lifespan_context["client"]
        if client is None:
            return text_result("relay: set RELAY_BASE_URL", error=True)
        try:
            return text_result(await relay(client, args))
        except openai.OpenAIError as exc:
            return text_result(f"relay failed: {exc}", error=True)
    return text_result(f"unknown tool {params.name!r}", error=True)


def build_server() -> Server[Any]:
    return Server(
        "bare", version="0", lifespan=lifespan, on_list_tools=list_tools, on_call_tool=call_tool
    )


async def main() -> None:
    server = build_server()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
