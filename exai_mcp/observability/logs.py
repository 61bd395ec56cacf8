"""`EXAI_LOG_FORMAT=json`: one JSON object per line on stderr, API keys masked.

    {"ts": "2026-12-03T10:42:21.123Z", "level": "INFO", "logger": "exai_mcp.calls",
     "msg": "call finished", "request_id": "7", "tool": "analyze", "client": "stdio",
     "trace_id": "4bf9...", "duration_ms": 812.4, "outcome": "ok", ...}

`request_id`, `tool` and `client` come from the record's `extra`, else from the call being
served (`observability.context`); `trace_id` from the current span when tracing is on. The
whole line goes through the same `Redactor` as text logs, after it is built, so no field can
carry a key out.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from exai_mcp.observability.context import current_call
from exai_mcp.observability.tracing import current_trace_id
from exai_mcp.redact import Redactor

CALL_FIELDS = ("request_id", "tool", "client")


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def escape_controls(text: str) -> str:
    """`text` with control characters written as escapes (`\\n`, `\\x00`): what a client sent
    (a newline in a path, a NUL in a model id) can never start a log line of its own."""
    return _CONTROL.sub(lambda m: _NAMED.get(m[0]) or f"\\x{ord(m[0]):02x}", text)


class TextLines(logging.Formatter):
    """The text format (EXAI_LOG_FORMAT=text): one line per record, tracebacks apart."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class JsonLines(logging.Formatter):
    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call = current_call.get()
        for name in CALL_FIELDS:
            value = getattr(record, name, None)
            if value is None and call is not None:
                value = getattr(call, name)
            if value is not None:
                entry[name] = value
        trace_id = getattr(record, "trace_id", None) or current_trace_id()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        fields = getattr(record, "exai", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        line = json.dumps(entry, default=str, ensure_ascii=False)
        return self.redactor.redact(line) if self.redactor is not None else line


def announce(message: str, *, log_format: str) -> None:
    """A line for the operator whatever the log level ("listening on ..."), in the log format."""
    if log_format == "json":
        now = time.time()
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        )
        message = json.dumps({"ts": stamp, "level": "INFO", "logger": "exai_mcp", "msg": message})
    print(message, file=sys.stderr, flush=True)
