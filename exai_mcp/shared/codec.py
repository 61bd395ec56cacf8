"""Answers as JSON, the form in which they travel between processes through Redis."""

from __future__ import annotations

import dataclasses
import json

from exai_mcp.middleware.call import Answer


def encode_answer(answer: Answer) -> str:
    return json.dumps(dataclasses.asdict(answer), separators=(",", ":"))


def decode_answer(text: str) -> Answer:
    """The Answer `encode_answer` wrote (JSON lists back into the tuples Answer holds)."""
    data = json.loads(text)
    data["files_included"] = tuple(data.get("files_included", ()))
    data["files_left_out"] = tuple(tuple(pair) for pair in data.get("files_left_out", ()))
    return Answer(**data)
