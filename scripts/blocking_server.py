"""The baseline exai-mcp replaces: an MCP server that blocks its event loop on provider calls.

    RELAY_BASE_URL=http://127.0.0.1:PORT/v1 python scripts/blocking_server.py

A bare `mcp` low-level server whose `analyze` tool calls the provider with the synchronous
`openai.OpenAI` client directly inside the async handler, as the servers exai-mcp replaces did.
While one call waits for the provider, the event loop cannot run anything else, so concurrent
calls are served one after another: 20 calls at 500 ms provider latency take about 10 s.
For `scripts/bench.py` only: do not copy this pattern.
"""

from __future__ import annotations

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

ANALYZE = Tool(
    name="analyze",
    description="Asks the provider at RELAY_BASE_URL, blocking the event loop while it waits.",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string"}, "model": {"type": "string"}},
        "required": ["text"],
    },
)


@asynccontextmanager
async def lifespan(_server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
    client = openai.OpenAI(
        api_key=os.environ.get("RELAY_API_KEY", "x"),
        base_url=os.environ["RELAY_BASE_URL"],
        max_retries=0,
    )
    try:
        yield {"client": client}
    finally:
        client.close()


async def list_tools(
    _ctx: ServerRequestContext[Any], _params: PaginatedRequestParams | None
) -> ListToolsResult:
    return ListToolsResult(tools=[ANALYZE])


async def call_tool(
    ctx: ServerRequestContext[Any], params: CallToolRequestParams
) -> CallToolResult:
    args = params.arguments or {}
    client: openai.OpenAI = ctx.lifespan_context["client"]
    # The anti-pattern under test: a synchronous HTTP call inside an async handler.
    response = client.chat.completions.create(
        model=str(args.get("model") or "kimi-k2-0905-preview"),
        messages=[{"role": "user", "content": str(args.get("text", ""))}],
        timeout=60,
    )
    text = response.choices[0].message.content or ""
    return CallToolResult(content=[TextContent(type="text", text=text)])


def build_server() -> Server[Any]:
    return Server(
        "blocking-baseline",
        version="0",
        lifespan=lifespan,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def main() -> None:
    server = build_server()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
