"""A malformed message gets the JSON-RPC error it is owed, with its id, and the server goes on.

Raw lines are written to a spawned `python -m exai_mcp`, as a buggy client would write them:
the SDK's own client cannot send most of them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from exai_mcp.transports.jsonrpc import Rejected, read_line
from exai_mcp.transports.stdio import MAX_LINE_BYTES
from tests.conftest import raw_stdio_server

REPLY_WAIT = 5.0  # seconds for each expected reply; the server answers these at once
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602

DEEP = "[" * 250 + "]" * 250  # deeper than the 200 levels the SDK's parser accepts
SURROGATE = "\\ud800"  # the escape, as written on the wire

# (case, raw line, [(code, id)] of the replies it is owed, in order)
CASES: list[tuple[str, str, list[tuple[int, Any]]]] = [
    (
        "wrong jsonrpc",
        '{"jsonrpc":"1.0","id":1,"method":"tools/list"}',
        [(INVALID_REQUEST, 1)],
    ),
    ("missing jsonrpc", '{"id":2,"method":"tools/list"}', [(INVALID_REQUEST, 2)]),
    ("missing method", '{"jsonrpc":"2.0","id":3}', [(INVALID_REQUEST, 3)]),
    ("non-string method", '{"jsonrpc":"2.0","id":4,"method":7}', [(INVALID_REQUEST, 4)]),
    (
        "params as a list",
        '{"jsonrpc":"2.0","id":5,"method":"tools/list","params":[1]}',
        [(INVALID_REQUEST, 5)],
    ),
    (
        "params as a string",
        '{"jsonrpc":"2.0","id":"six","method":"tools/list","params":"x"}',
        [(INVALID_REQUEST, "six")],
    ),
    (
        "nesting deeper than 200 levels",
        '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"status","a":'
        + DEEP
        + "}}",
        [(PARSE_ERROR, 7)],
    ),
    (
        "a lone surrogate",
        '{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"' + SURROGATE + '"}}',
        [(PARSE_ERROR, 8)],
    ),
    (
        "a batch",
        '[{"jsonrpc":"2.0","id":9,"method":"tools/list"},'
        '{"jsonrpc":"2.0","id":10,"method":"ping"}]',
        [(INVALID_REQUEST, 9), (INVALID_REQUEST, 10)],
    ),
    (
        "two messages on one line",
        '{"jsonrpc":"2.0","id":11,"method":"tools/list"}{"jsonrpc":"2.0","id":12,"method":"ping"}',
        [(PARSE_ERROR, 11), (PARSE_ERROR, 12)],
    ),
    (
        "an id that is neither string nor integer",
        '{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}',
        [(INVALID_REQUEST, None)],
    ),
    (
        "a lone surrogate in the id",
        '{"jsonrpc":"2.0","id":"' + SURROGATE + '","method":"tools/list"}',
        [(PARSE_ERROR, None)],
    ),
    ("text that is not JSON", '{"jsonrpc":"2.0","id":13,', [(PARSE_ERROR, None)]),
    ("an empty batch", "[]", [(INVALID_REQUEST, None)]),
    ("a bare number", "42", [(INVALID_REQUEST, None)]),
    (
        "a malformed notification",
        '{"jsonrpc":"2.0","method":"notifications/progress","params":[1]}',
        [(INVALID_REQUEST, None)],
    ),
]


class RawClient:
    """One spawned server and its pipes, spoken to line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def receive(self, what: str = "a reply") -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), REPLY_WAIT)
        except TimeoutError:
            pytest.fail(f"no reply within {REPLY_WAIT} s for {what}")
        assert line, "the server closed stdout"
        return json.loads(line)

    async def request(self, request_id: int, method: str, params: dict[str, Any]) -> Any:
        await self.send(
            json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        )
        reply = await self.receive()
        assert reply["id"] == request_id, reply
        return reply


@pytest.fixture
async def raw_server(tmp_path: Path) -> AsyncIterator[RawClient]:
    env = {"EXAI_STATE_DB": str(tmp_path / "state.sqlite3")}
    async with raw_stdio_server(env, tmp_path) as process:
        yield RawClient(process)


async def test_each_malformed_message_gets_its_error_with_its_id_and_the_server_goes_on(
    raw_server: RawClient,
) -> None:
    for case, line, owed in CASES:
        await raw_server.send(line)
        replies = [await raw_server.receive(case) for _ in owed]

        got = [(reply["error"]["code"], reply["id"]) for reply in replies]
        assert got == owed, case
        for reply in replies:
            assert reply["jsonrpc"] == "2.0" and set(reply) == {"jsonrpc", "id", "error"}, case

    listed = await raw_server.request(100, "tools/list", {})
    assert {tool["name"] for tool in listed["result"]["tools"]} >= {"analyze", "status"}


async def test_a_malformed_response_and_a_blank_line_are_owed_nothing(
    raw_server: RawClient,
) -> None:
    await raw_server.send('{"jsonrpc":"2.0","id":99,"result":5}')
    await raw_server.send("")

    # The next line on stdout answers the next request: nothing was written for those two.
    listed = await raw_server.request(101, "tools/list", {})
    assert "result" in listed


async def test_a_line_over_the_limit_is_answered_and_read_past_not_held(
    raw_server: RawClient,
) -> None:
    flood = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"analyze","text":"'
    await raw_server.send(flood + "x" * MAX_LINE_BYTES + '"}}')

    refused = await raw_server.receive("the over-long line")
    assert refused["id"] is None and refused["error"]["code"] == INVALID_REQUEST
    assert refused["error"]["message"].startswith(
        f"Invalid Request: message over {MAX_LINE_BYTES} bytes"
    )
    listed = await raw_server.request(102, "tools/list", {})  # the next line is read whole
    assert "result" in listed


async def test_the_error_says_what_is_wrong(raw_server: RawClient) -> None:
    await raw_server.send('{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}')
    await raw_server.send('{"jsonrpc":"2.0","id":2,"method":"x"}{"jsonrpc":"2.0","id":3}')

    invalid = await raw_server.receive()
    parse = await raw_server.receive()
    assert invalid["error"]["message"] == "Invalid Request: params must be an object"
    assert parse["error"]["message"].startswith("Parse error: trailing characters")


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"arguments": {}}, "tools/call needs params.name, the tool to call (analyze, workflow, "),
        ({"name": 7}, "tools/call needs params.name"),
        ({"name": "analyze", "arguments": []}, "params.arguments must be an object holding the "),
        ({"name": "analyze", "arguments": "text"}, "got a string"),
    ],
)
async def test_a_tools_call_the_sdk_cannot_read_is_told_what_is_wrong(
    raw_server: RawClient, params: dict[str, Any], problem: str
) -> None:
    reply = await raw_server.request(7, "tools/call", params)

    assert reply["error"]["code"] == INVALID_PARAMS
    assert reply["error"]["message"].startswith("Invalid params: ")
    assert problem in reply["error"]["message"]


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        (
            "tools/call",
            {"name": "nope", "arguments": {}},
            "Unknown tool: 'nope'; this server has analyze, workflow, status",
        ),
        (
            "tools/list",
            {"cursor": "bogus"},
            "Invalid params: unknown cursor; this server lists every tool in one page",
        ),
    ],
)
async def test_an_unknown_tool_or_cursor_is_the_protocol_error_the_spec_names(
    raw_server: RawClient, method: str, params: dict[str, Any], message: str
) -> None:
    """MCP 2025-11-25, server/tools (Error Handling) and utilities/pagination: -32602."""
    reply = await raw_server.request(8, method, params)

    assert reply["error"]["code"] == INVALID_PARAMS
    assert reply["error"]["message"].startswith(message)


@pytest.mark.parametrize(
    "line",
    [
        '{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
        '{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"status"}}',
        '{"jsonrpc":"2.0","method":"notifications/initialized"}',
        '{"jsonrpc":"2.0","id":1,"result":{}}',
        '  {"jsonrpc":"2.0","id":1,"method":"ping","params":null}  \n',
    ],
)
def test_well_formed_messages_pass_as_the_sdk_reads_them(line: str) -> None:
    assert not isinstance(read_line(line), Rejected)


def test_ids_are_recovered_from_at_most_a_bounded_number_of_values() -> None:
    line = "".join(f'{{"jsonrpc":"2.0","id":{i},"method":"ping"}}' for i in range(1000))

    rejected = read_line(line)

    assert isinstance(rejected, Rejected)
    assert [reply.id for reply in rejected.replies] == list(range(32))
