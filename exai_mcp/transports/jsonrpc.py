"""What one line from the client is: a JSON-RPC message, or the error replies it is owed.

    message = read_line(line)
    if isinstance(message, Rejected):
        for reply in message.replies: ...     # JSON-RPC errors to write; often exactly one
    else: ...                                 # a JSONRPCMessage the SDK accepts as is

The SDK's stdio reader validates each line and drops the ones that fail without a word, so
their callers wait out their own timeouts. JSON-RPC 2.0 owes them an answer:

- text the SDK's JSON parser refuses (bad syntax, nesting deeper than its 200 levels, a lone
  surrogate escape, two messages on one line) gets -32700 Parse error;
- valid JSON that is not a message (wrong or missing `jsonrpc`, missing or non-string
  `method`, `params` that is not an object, an `id` that is not a string or an integer, a
  batch) gets -32600 Invalid Request.

The reply carries the request's id when it can be read, else null, as JSON-RPC 2.0 says. For
unparseable text the id is read leniently (the standard library's parser, value by value), so
that a caller whose request merely nests too deeply or carries a lone surrogate still gets
its answer. Batches are answered element by element, one error line per request in it (MCP
has no batches since 2025-06-18, and its clients read one message per line). Malformed
responses (objects with `result` or `error` and no `method`) are owed nothing and get nothing,
and blank lines are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mcp_types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    RequestId,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from pydantic_core import from_json

# A line with more values than this is a flood, not a mistake: its remaining ids go unread.
MAX_IDS_RECOVERED = 32


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that is not a message: the error replies it is owed (maybe none) and why."""

    replies: tuple[JSONRPCError, ...]
    reason: str


def read_line(line: str) -> JSONRPCMessage | Rejected:
    """The message on `line`, exactly as the SDK's reader would accept it, or why not."""
    if not line.strip():
        return Rejected((), "blank line")
    try:
        message = jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValidationError as exc:
        parse_errors = [err["msg"] for err in exc.errors() if err["type"] == "json_invalid"]
        if parse_errors:
            return _parse_error(line, parse_errors[0].removeprefix("Invalid JSON: "))
        return _invalid(from_json(line), exc)
    if isinstance(message, JSONRPCNotification) and "id" in _object(line):
        # The SDK reads a request whose id has the wrong type (1.5, true, null) as a
        # notification: it would run, and its caller would never hear back.
        return _rejected(INVALID_REQUEST, "id must be a string or an integer", [None])
    return message


def _object(line: str) -> dict[str, Any]:
    value = from_json(line)  # parses: the SDK's parser just accepted this very line
    return value if isinstance(value, dict) else {}


def _parse_error(line: str, reason: str) -> Rejected:
    ids = [request_id(value) for value in _lenient_values(line)]
    return _rejected(PARSE_ERROR, reason, [i for i in ids if i is not None] or [None])


def _invalid(value: Any, exc: ValidationError) -> Rejected:
    if isinstance(value, list):
        ids = [request_id(item) for item in value[:MAX_IDS_RECOVERED]]
        reason = "batches (JSON arrays) are not supported; send each message on its own line"
        return _rejected(INVALID_REQUEST, reason, [i for i in ids if i is not None] or [None])
    if not isinstance(value, dict):
        return _rejected(INVALID_REQUEST, "a message must be a JSON object", [None])
    if "method" not in value and ("result" in value or "error" in value):
        return Rejected((), "malformed response: responses are never answered")
    return _rejected(INVALID_REQUEST, _problem(value, exc), [request_id(value)])


def too_long(limit: int) -> Rejected:
    """What a line over `limit` bytes is owed: its id is not read (nor the line kept)."""
    return _rejected(
        INVALID_REQUEST,
        f"message over {limit} bytes; send file paths (files, relevant_files) instead "
        "of their contents",
        [None],
    )


def _problem(message: dict[str, Any], exc: ValidationError) -> str:
    """The first thing wrong with an object that should be a request or a notification."""
    if "jsonrpc" not in message:
        return 'jsonrpc is missing; it must be "2.0"'
    if message["jsonrpc"] != "2.0":
        return 'jsonrpc must be "2.0"'
    if "method" not in message:
        return "method is missing"
    if not isinstance(message["method"], str):
        return "method must be a string"
    if message.get("params") is not None and not isinstance(message["params"], dict):
        return "params must be an object"
    if "id" in message and request_id(message) is None:
        return "id must be a string or an integer"
    return f"not a JSON-RPC 2.0 message: {exc.errors()[0]['msg']}"


def request_id(value: object) -> RequestId | None:
    """The id of a would-be request, if it is one a reply can carry (string or integer)."""
    if not isinstance(value, dict):
        return None
    found = value.get("id")
    if isinstance(found, int) and not isinstance(found, bool):
        return found
    if isinstance(found, str) and _encodable(found):
        return found
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate cannot be written back in UTF-8
        return False
    return True


def _lenient_values(line: str) -> list[Any]:
    """The JSON values on a line the strict parser refused, as far as the stdlib can read them.

    The stdlib parser accepts lone surrogates and nests up to the interpreter's recursion
    limit, and `raw_decode` reads values one after another (two messages on one line).
    """
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while len(values) < MAX_IDS_RECOVERED:
        while position < len(line) and line[position].isspace():
            position += 1
        if position >= len(line):
            break
        try:
            value, position = decoder.raw_decode(line, position)
        except (ValueError, RecursionError):
            break
        values.append(value)
    return values


def _rejected(code: int, reason: str, ids: list[RequestId | None]) -> Rejected:
    title = "Parse error" if code == PARSE_ERROR else "Invalid Request"
    error = ErrorData(code=code, message=f"{title}: {reason}")
    return Rejected(tuple(JSONRPCError(jsonrpc="2.0", id=i, error=error) for i in ids), reason)
