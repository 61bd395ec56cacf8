"""Keeping API keys out of what the assistant reads and what the log shows.

    redactor = Redactor([api_key])
    detail = redactor.redact(provider_text, limit=500)   # scrub, then cut
    install_log_redaction([kimi_key, glm_key])           # once, after logging is configured

Guarantee: for a secret of at least `MIN_RUN` (8) characters, `Redactor.redact` returns text in
which no `MIN_RUN` consecutive characters of the secret remain, wherever they were: the whole
key, a key cut by a gateway before us, a prefix at the end of our own cut or a suffix at the
start of a text cut from the front. Each such run (merged with overlapping ones) becomes `***`.
A secret shorter than `MIN_RUN` is not masked at all: no real API key is that short, and
masking every "x" of a test key `x` would garble every answer. Scrubbing happens before
cutting, so a cut can never expose what scrubbing would have caught. (A secret containing `*`
could re-form a run next to the mask; API keys do not contain `*`.)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["MASK", "MIN_RUN", "RedactingFilter", "Redactor", "install_log_redaction", "redact_url"]

MASK = "***"
MIN_RUN = 8
CUT_MARK = "…"


class Redactor:
    """Masks every run of `MIN_RUN` or more characters of the given secrets."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str]) -> None:
        pieces: set[str] = set()
        for secret in secrets:
            if len(secret) < MIN_RUN:
                continue
            pieces.update(secret[i : i + MIN_RUN] for i in range(len(secret) - MIN_RUN + 1))
        # A lookahead finds every start position, so overlapping runs are all seen.
        alternatives = "|".join(re.escape(p) for p in sorted(pieces, key=len, reverse=True))
        self._pattern = re.compile(f"(?=({alternatives}))") if pieces else None

    def redact(self, text: str, *, limit: int | None = None) -> str:
        """`text` with every secret run masked, then cut to `limit` characters (plus `…`)."""
        text = self._scrub(text)
        if limit is not None and len(text) > limit:
            text = text[:limit] + CUT_MARK
        return text

    def _scrub(self, text: str) -> str:
        if self._pattern is None:
            return text
        spans: list[list[int]] = []
        for match in self._pattern.finditer(text):
            start, end = match.start(), match.start() + len(match.group(1))
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        if not spans:
            return text
        parts: list[str] = []
        done = 0
        for start, end in spans:
            parts += [text[done:start], MASK]
            done = end
        parts.append(text[done:])
        return "".join(parts)


class RedactingFilter(logging.Filter):
    """A handler filter that masks secrets in each record's final message and exception text.

    On a handler it sees records from every logger that reaches that handler. The record is
    changed in place (`msg` becomes the masked text, `args` becomes empty), so every handler
    after this one sees the masked text too.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as it would
            return True
        record.msg = self.redactor.redact(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            # Formatters reuse a cached exc_text, so the masked traceback is what they print.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


def install_log_redaction(secrets: Iterable[str]) -> RedactingFilter:
    """Mask `secrets` in everything the root logger's handlers write.

    Call once after logging is configured: handlers added later are not covered. Calling it
    again replaces the earlier filter instead of stacking a second one.
    """
    redacting = RedactingFilter(Redactor(secrets))
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redacting)
    return redacting


def redact_url(url: str) -> str:
    """A connection URL fit for logs and status: any password (and user) replaced by `***`.

    `rediss://user:secret@host:6380/0` becomes `rediss://***@host:6380/0`; a URL without
    credentials is returned as it is. Query strings can carry a password too, so they go.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"
    rest = rest.split("?", 1)[0]
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}://{rest}"
