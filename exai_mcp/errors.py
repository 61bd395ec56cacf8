"""Every failure a user of exai-mcp can see, in one tree.

    ExaiError                  base: its message is what the assistant reads
    ├── ConfigError            settings are missing or inconsistent (exit 2 at start-up)
    │   └── StoreUnusable      the EXAI_STATE_DB file cannot be opened or is not ours
    ├── InputError             a tool argument is wrong: names the field and what is allowed
    │   ├── UnknownTool        the call named a tool this server does not have
    │   ├── InvalidArguments   the arguments failed the tool's input model
    │   ├── FileAccessError    a path is outside the roots, secret, missing, binary or too big
    │   ├── ThreadError        a continuation_id is unknown, expired or full
    │   └── PromptTooLarge     the prompt cannot fit the model's window (nothing is sent)
    ├── BusyError              no concurrency permit in time, or the thread store stayed locked
    ├── DeadlineExceeded       the request's time budget ran out
    ├── DaemonUnavailable      an attached stdio process cannot reach the daemon (names the URL)
    └── ProviderError          a model provider failed (translated at the provider boundary)
        ├── AuthRejected       the API key was refused (names the variable, never the key)
        ├── RateLimited        HTTP 429, with the provider's Retry-After when given
        │   └── QuotaExhausted   our own EXAI_<P>_RPM/TPM quota has no room before the deadline
        ├── ProviderUnavailable  HTTP 5xx, or the circuit breaker is open
        │   ├── MalformedResponse  a reply that does not parse (retried like a 5xx)
        │   └── StreamCut      the answer's stream ended before it was complete (retried)
        ├── BadRequest         HTTP 400/404/422: the request itself is wrong; never retried
        ├── ProviderTimeout    one attempt took longer than its timeout
        └── Unreachable        the base URL could not be connected to (names the URL)

Provider SDK exceptions never travel past `exai_mcp.providers`; tools and middleware only
see these classes. `user_message` turns any exception into the text the client sees.

A provider error reads in three parts, joined by "; ": the cause with `provider:model` first
(`kimi:kimi-k2-0905-preview timed out: ...`), what was tried (added by the retry layer, which
alone knows), and which setting to change (`advice`). The API key is never in any part.
"""

from __future__ import annotations

import copy as _copy


class ExaiError(Exception):
    """Base class: the message is written for the assistant and is safe to show."""

    kind = "error"


class ConfigError(ExaiError):
    kind = "config"


class StoreUnusable(ConfigError):
    """The thread store cannot serve: one line naming EXAI_STATE_DB, the path, why, what to do."""

    kind = "store"

    def __init__(self, path: str, reason: str, advice: str) -> None:
        super().__init__(f"EXAI_STATE_DB={path}: {reason}; {advice}")
        self.path = path
        self.reason = reason
        self.advice = advice


class InputError(ExaiError):
    kind = "input"


class FileAccessError(InputError):
    kind = "file_access"

    def __init__(self, path: str, reason: str, *, field: str | None = None) -> None:
        shown = path or "(an empty path)"
        super().__init__(f"{field}: {shown}: {reason}" if field else f"{shown}: {reason}")
        self.path = path
        self.reason = reason
        self.field = field


class UnknownTool(InputError):
    """A call named a tool this server does not have (REST answers 404)."""

    kind = "unknown_tool"


class InvalidArguments(InputError):
    """A call's arguments failed the tool's input model (REST answers 422)."""

    kind = "invalid_arguments"


class ThreadError(InputError):
    kind = "thread"


class BusyError(ExaiError):
    kind = "busy"


class DeadlineExceeded(ExaiError):
    kind = "deadline"


class DaemonUnavailable(ExaiError):
    """The daemon an attached stdio process forwards to is down, died, or could not start."""

    kind = "daemon"


class PromptTooLarge(InputError):
    """The estimated prompt cannot fit the model's window: refused before anything is paid.

    `needed` (prompt estimate plus the answer's reserve, in tokens) lets `model=auto` look
    for a provider whose model has room.
    """

    kind = "prompt_too_large"

    def __init__(self, message: str, *, needed: int = 0) -> None:
        super().__init__(message)
        self.needed = needed


class ProviderError(ExaiError):
    """A provider failed. `retryable` tells the retry layer whether another attempt may help.

    `str()` is `cause; tried; advice` (empty parts left out): the cause opens the message.
    """

    kind = "provider"
    retryable = False

    def __init__(
        self, message: str, *, provider: str = "", model: str = "", advice: str = ""
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.advice = advice
        self.tried = ""

    @property
    def cause(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return "; ".join(part for part in (self.cause, self.tried, self.advice) if part)

    def with_tried(self, tried: str) -> ProviderError:
        """A copy saying what was tried (attempts, budget), placed between cause and advice."""
        copy = _copy.copy(self)
        copy.tried = tried
        return copy


class AuthRejected(ProviderError):
    kind = "auth"


class RateLimited(ProviderError):
    kind = "rate_limited"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        advice: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, model=model, advice=advice)
        self.retry_after = retry_after


class QuotaExhausted(RateLimited):
    """Our own quota (EXAI_<P>_RPM / _TPM) cannot admit the request before its deadline.

    Never retried: waiting is what the quota already did, up to the deadline."""

    kind = "quota"
    retryable = False


class ProviderUnavailable(ProviderError):
    kind = "unavailable"
    retryable = True


class BreakerOpen(ProviderUnavailable):
    """Raised without calling the provider: it failed too often and is cooling down."""

    kind = "breaker_open"
    retryable = False


class BadRequest(ProviderError):
    kind = "bad_request"


class ProviderTimeout(ProviderError):
    kind = "timeout"
    retryable = True


class Unreachable(ProviderError):
    kind = "unreachable"
    retryable = True


class MalformedResponse(ProviderUnavailable):
    """A 200 whose body does not parse: the provider's (or a gateway's) fault, not ours."""

    kind = "malformed"


class StreamCut(ProviderUnavailable):
    """The streamed answer stopped before its end (connection dropped, no finish_reason)."""

    kind = "stream_cut"


def user_message(exc: BaseException) -> str:
    """The one text a client sees for a failure: ours verbatim, anything else generic."""
    if isinstance(exc, ExaiError):
        return str(exc)
    return f"internal error ({type(exc).__name__}); the server log on stderr has the details"
