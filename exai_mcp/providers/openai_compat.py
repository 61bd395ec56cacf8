"""A provider reached through `openai.AsyncOpenAI` at an OpenAI-compatible endpoint.

Kimi (Moonshot) and GLM (Zhipu / Z.ai) both serve the OpenAI chat-completions API, so one
implementation serves both; their modules only set names, defaults and quirks. The SDK's own
retries are off (`max_retries=0`): retrying belongs to `exai_mcp.middleware.retry`.

Two things never leave this module: the API key (every message built here goes through one
`Redactor`, which scrubs before it cuts), and anything the SDK would take from `OPENAI_*`
variables (organization, project, extra headers): those belong to an OpenAI account.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import openai

from exai_mcp.errors import (
    AuthRejected,
    BadRequest,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StreamCut,
    Unreachable,
)
from exai_mcp.observability.tracing import outgoing_headers
from exai_mcp.providers.base import ChatRequest, ChatResult, TokenCallback
from exai_mcp.redact import Redactor

if TYPE_CHECKING:
    import ssl

    import httpx

log = logging.getLogger(__name__)

DETAIL_LIMIT = 500  # characters of the provider's own error text kept in a message
MAX_UNSTREAMED_BYTES = 8 * 1024 * 1024  # a 200 that is no event stream is read up to this
_PROVIDER_SIDE_ADVICE = "call again later, or use model=auto or another provider's model meanwhile"


class OpenAICompatibleProvider:
    """Streams chat completions and translates every SDK failure into `ProviderError`."""

    def __init__(
        self,
        *,
        name: str,
        api_key: str,
        base_url: str,
        key_variable: str,
        base_url_variable: str = "",
        timeout_variable: str = "",
        max_inflight_variable: str = "",
        adjust_temperature: Callable[[float], float] = lambda t: t,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context`: the TLS set-up to verify the provider with, shared by every provider of
        one server (`create_providers`); without it the client builds its own."""
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.key_variable = key_variable
        self.base_url_variable = base_url_variable or f"{name.upper()}_BASE_URL"
        self.timeout_variable = timeout_variable or f"{name.upper()}_TIMEOUT_SECS"
        self.max_inflight_variable = max_inflight_variable or f"EXAI_{name.upper()}_MAX_INFLIGHT"
        self._redactor = Redactor([api_key])
        self._adjust_temperature = adjust_temperature
        self._client = _client_for(api_key, self.base_url, ssl_context)

    async def complete(
        self, request: ChatRequest, *, timeout: float, on_tokens: TokenCallback | None = None
    ) -> ChatResult:
        model = request.model
        body: dict[str, object] = {
            "model": model,
            "messages": request.messages(),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.temperature is not None:
            body["temperature"] = self._adjust_temperature(request.temperature)
        try:
            # The client's own `post` (the SDK's documented way to call any endpoint): the
            # same HTTP, status errors and SSE handling as `chat.completions.create`, without
            # transforming a body that needs no transforming or building a typed model for
            # every chunk, which cost more per call than the rest of the pipeline.
            stream = await self._client.post(
                "/chat/completions",
                cast_to=object,
                body=body,
                options=_options(timeout),
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
        except openai.OpenAIError as exc:
            raise self._translate(exc, model) from None
        progress = _Progress(on_tokens)
        try:
            try:
                content_type = stream.response.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    return await self._unstreamed(stream.response, model, content_type)
                return await self._collect(stream, model, progress)
            finally:
                # Shielded: a cancelled call must still close the connection, so the
                # provider sees the disconnect and stops generating (and billing).
                with anyio.CancelScope(shield=True):
                    await stream.close()
        except openai.APIConnectionError as exc:
            if isinstance(exc, openai.APITimeoutError):
                raise self._translate(exc, model) from None
            # The connection was made and the answer had begun: it was cut, not unreachable.
            why = self._detail(str(exc.__cause__ or exc))
            raise self._stream_cut(model, progress.tokens, why) from None
        except openai.OpenAIError as exc:
            raise self._translate(exc, model) from None
        except json.JSONDecodeError as exc:  # an SSE event that is not JSON
            raise self._malformed(model, f"not JSON: {exc.msg}") from None

    async def _collect(
        self, stream: openai.AsyncStream[object], model: str, progress: _Progress
    ) -> ChatResult:
        parts: list[str] = []
        received = thinking = 0
        prompt_tokens = completion_tokens = 0
        finish_reason = None
        served_model = model
        async for chunk in stream:
            try:
                choices = chunk.get("choices") or ()  # type: ignore[attr-defined]
                choice = choices[0] if choices else None
                served_model = chunk.get("model") or served_model  # type: ignore[attr-defined]
                # Moonshot reports usage inside the last choice rather than at the top level.
                usage = chunk.get("usage") or (choice.get("usage") if choice else None)  # type: ignore[attr-defined]
                if usage:
                    prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    completion_tokens = int(usage.get("completion_tokens") or 0)
                if choice is None:
                    continue
                finish_reason = choice.get("finish_reason") or finish_reason
                delta = choice.get("delta") or {}
                content = delta.get("content")
                reasoning = None if content else delta.get("reasoning_content")
            except (AttributeError, TypeError, KeyError, IndexError, ValueError):
                raise self._malformed(
                    model, "an event that is not a chat-completion chunk"
                ) from None
            if content:
                parts.append(str(content))
                received += 1
                progress.tokens = received
                if progress.on_tokens is not None:
                    progress.on_tokens(received, False)
            elif reasoning:
                # Thinking models stream their reasoning first; it is not part of the answer.
                thinking += 1
                if progress.on_tokens is not None:
                    progress.on_tokens(thinking, True)
        if finish_reason is None:
            # Every OpenAI-compatible stream ends with a finish_reason; a connection closed
            # before it (a proxy's idle timeout, a crashed worker) leaves a partial answer.
            raise self._stream_cut(model, received, "it ended without a finish_reason")
        return ChatResult(
            text="".join(parts),
            model=str(served_model),
            provider=self.name,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens or received,
            finish_reason=str(finish_reason),
        )

    async def _unstreamed(
        self, response: httpx.Response, model: str, content_type: str
    ) -> ChatResult:
        """A 200 that is no event stream: a gateway that ignored `stream` (its whole answer is
        used), an error sent with status 200, or a page such as a captive portal's."""
        body = bytearray()
        async for piece in response.aiter_bytes():
            body += piece
            if len(body) > MAX_UNSTREAMED_BYTES:
                raise self._malformed(model, f"over {MAX_UNSTREAMED_BYTES} bytes of {content_type}")
        try:
            data = json.loads(body)
        except ValueError:
            start = self._detail(bytes(body[:60]).decode("utf-8", errors="replace").strip())
            raise self._malformed(
                model, f"not an event stream but {content_type or 'no content type'}: {start!r}"
            ) from None
        if isinstance(data, dict) and data.get("error"):
            error = data["error"]
            detail = self._detail(
                str(error.get("message") or error) if isinstance(error, dict) else str(error)
            )
            raise self._error(
                ProviderUnavailable,
                f"{self.label(model)} answered with an error instead of a stream (HTTP 200: "
                f"{detail})",
                model,
                advice=_PROVIDER_SIDE_ADVICE,
            )
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            usage = data.get("usage") or {}
            return ChatResult(
                text=str(text),
                model=str(data.get("model") or model),
                provider=self.name,
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                finish_reason=str(choice.get("finish_reason") or "stop"),
            )
        except (AttributeError, TypeError, KeyError, IndexError, ValueError):
            raise self._malformed(model, "not the chat-completion shape") from None

    async def list_models(self, *, timeout: float) -> list[str]:
        try:
            page = await self._client.models.list(timeout=timeout)
            return [m.id for m in page.data]
        except openai.OpenAIError as exc:
            raise self._translate(exc, "") from None

    async def aclose(self) -> None:
        await self._client.close()

    def _translate(self, exc: openai.OpenAIError, model: str) -> ProviderError:
        """Map an SDK exception to our tree; every message is redacted (see `exai_mcp.redact`).

        Each message opens with the cause and `provider:model`, and its advice names the
        setting to change; the retry layer adds what was tried in between.
        """
        label = self.label(model)
        if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError: it subclasses it
            return self._error(
                ProviderTimeout,
                f"{label} timed out: no answer in time from {self.base_url}",
                model,
                advice=f"raise {self.timeout_variable}, or send less",
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return self._malformed(model, "not the chat-completion shape")
        if isinstance(exc, openai.APIConnectionError):
            cause = self._detail(str(exc.__cause__ or exc))
            return self._error(
                Unreachable,
                f"{label} is unreachable: cannot connect to {self.base_url} ({cause})",
                model,
                advice=f"check {self.base_url_variable} and the network or proxy",
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = self._detail(_error_detail(exc))
            if status in (401, 403):
                return self._error(
                    AuthRejected,
                    f"{label} rejected the API key in {self.key_variable} (HTTP {status}: "
                    f"{detail})",
                    model,
                    advice=f"put a key valid for {self.base_url} in {self.key_variable} (keys "
                    "belong to one platform) and restart the server",
                )
            if status == 429:
                retry_after = _retry_after(exc.response.headers)
                hint = f"; the provider asks to wait {retry_after:g} s" if retry_after else ""
                return self._error(
                    RateLimited,
                    f"{label} is rate limited (HTTP 429: {detail}){hint}",
                    model,
                    advice=f"wait and call again, or lower {self.max_inflight_variable} so "
                    "fewer requests run at once",
                    retry_after=retry_after,
                )
            if status >= 500:
                return self._error(
                    ProviderUnavailable,
                    f"{label} failed on the provider's side (HTTP {status}: {detail})",
                    model,
                    advice=_PROVIDER_SIDE_ADVICE,
                )
            if status in (408, 409):  # the server gave up on this attempt, or it collided
                return self._error(
                    ProviderUnavailable,
                    f"{label} could not take the request just now (HTTP {status}: {detail})",
                    model,
                    advice=_PROVIDER_SIDE_ADVICE,
                )
            if status == 404:
                what = f"model {model!r}" if model else "this request"
                return self._error(
                    BadRequest,
                    f"{label} answered HTTP 404 for {what} ({detail})",
                    model,
                    advice="the model id may be retired (pick another model, or set "
                    f"{self.name.upper()}_DEFAULT_MODEL), or {self.base_url_variable} may lack "
                    "its API prefix (/v1, /api/paas/v4)",
                )
            return self._error(
                BadRequest,
                f"{label} refused the request (HTTP {status}: {detail})",
                model,
                advice="the request itself is wrong; change the arguments",
            )
        if isinstance(exc, openai.APIError):  # an error event in place of the rest of a stream
            return self._error(
                ProviderUnavailable,
                f"{label} sent an error in place of its answer ({self._detail(exc.message)})",
                model,
                advice=f"{_PROVIDER_SIDE_ADVICE}; if it names quota or balance, check the "
                f"account that {self.key_variable} belongs to",
            )
        return self._error(ProviderError, f"{label} failed: {self._detail(str(exc))}", model)

    def label(self, model: str) -> str:
        """`kimi:kimi-k2-0905-preview`, as messages open; the bare name when no model applies."""
        return f"{self.name}:{model}" if model else self.name

    def _malformed(self, model: str, what: str) -> ProviderError:
        return self._error(
            MalformedResponse,
            f"{self.label(model)} returned a malformed response ({what}): the provider's "
            "fault, not this server's",
            model,
            advice=f"call again; if it persists, check that {self.base_url_variable} points at "
            "the provider itself, not a proxy",
        )

    def _stream_cut(self, model: str, tokens: int, why: str) -> ProviderError:
        return self._error(
            StreamCut,
            f"{self.label(model)} cut its answer short: the stream stopped after {tokens} "
            f"token{'' if tokens == 1 else 's'} ({why})",
            model,
            advice=f"call again; if it persists, check {self.base_url_variable} (a proxy may "
            f"cut long streams) or raise {self.timeout_variable}",
        )

    def _detail(self, text: str) -> str:
        """The provider's own words, scrubbed and then cut (never the other way round)."""
        return self._redactor.redact(text, limit=DETAIL_LIMIT)

    def _error(
        self, kind: type[ProviderError], message: str, model: str, advice: str = "", **extra: Any
    ) -> ProviderError:
        # The whole message is scrubbed again: a key may also hide in the base URL.
        redact = self._redactor.redact
        return kind(
            redact(message), provider=self.name, model=model, advice=redact(advice), **extra
        )


def _client_for(
    api_key: str, base_url: str, ssl_context: ssl.SSLContext | None = None
) -> openai.AsyncOpenAI:
    """An SDK client that sends our key and nothing the SDK reads from `OPENAI_*` variables.

    AsyncOpenAI fills organization, project, admin key and webhook secret from OPENAI_ORG_ID,
    OPENAI_PROJECT_ID, OPENAI_ADMIN_KEY and OPENAI_WEBHOOK_SECRET, and adds every header in
    OPENAI_CUSTOM_HEADERS (whose Authorization even replaces ours). No constructor value turns
    that off (None means "read the variable", "" sends an empty header), so it is undone here.
    OPENAI_BASE_URL and OPENAI_API_KEY are only read when base_url / api_key are None.

    With `ssl_context`, the HTTP client is the SDK's default one (its timeout, connection
    limits and redirects; a connection pool of its own) verifying with that context instead of
    loading the CA bundle again: each load costs about 0.8 MiB of resident memory.
    """
    http_client = (
        None
        if ssl_context is None
        else openai.DefaultAsyncHttpxClient(base_url=base_url, verify=ssl_context)
    )
    client = openai.AsyncOpenAI(
        api_key=api_key, base_url=base_url, max_retries=0, http_client=http_client
    )
    client.organization = client.project = None  # None: the header is omitted
    client.admin_api_key = client.webhook_secret = None
    client._custom_headers = {}  # what OPENAI_CUSTOM_HEADERS added (no public way to drop it)
    return client


class _Progress:
    """The token callback, and how many answer tokens arrived (named when a stream is cut)."""

    __slots__ = ("on_tokens", "tokens")

    def __init__(self, on_tokens: TokenCallback | None) -> None:
        self.on_tokens = on_tokens
        self.tokens = 0


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("error")
        if isinstance(message, dict):
            message = message.get("message")
        if message:
            return str(message)
    return exc.message


def _retry_after(headers: object) -> float | None:
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = get(name)
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                return None  # an HTTP date: rare from these providers; fall back to backoff
    return None


def _options(timeout: float) -> dict[str, Any]:
    """Per-request options for `post`: the timeout, and `traceparent` when tracing is on."""
    headers = outgoing_headers()
    return {"timeout": timeout, "headers": headers} if headers else {"timeout": timeout}
