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
from typing import Any

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
    Unreachable,
)
from exai_mcp.observability.tracing import outgoing_headers
from exai_mcp.providers.base import ChatRequest, ChatResult, TokenCallback
from exai_mcp.redact import Redactor

log = logging.getLogger(__name__)

DETAIL_LIMIT = 500  # characters of the provider's own error text kept in a message


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
        adjust_temperature: Callable[[float], float] = lambda t: t,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.key_variable = key_variable
        self.base_url_variable = base_url_variable or f"{name.upper()}_BASE_URL"
        self._redactor = Redactor([api_key])
        self._adjust_temperature = adjust_temperature
        self._client = _client_for(api_key, self.base_url)

    async def complete(
        self, request: ChatRequest, *, timeout: float, on_tokens: TokenCallback | None = None
    ) -> ChatResult:
        kwargs: dict[str, object] = {}
        if request.temperature is not None:
            kwargs["temperature"] = self._adjust_temperature(request.temperature)
        try:
            stream = await self._client.chat.completions.create(
                model=request.model,
                messages=request.messages(),  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
                timeout=timeout,
                extra_headers=outgoing_headers(),  # `traceparent` when tracing is on
                **kwargs,  # type: ignore[arg-type]
            )
            try:
                return await self._collect(stream, request.model, on_tokens)
            finally:
                # Shielded: a cancelled call must still close the connection, so the
                # provider sees the disconnect and stops generating (and billing).
                with anyio.CancelScope(shield=True):
                    await stream.close()
        except openai.OpenAIError as exc:
            raise self._translate(exc, request.model) from None
        except json.JSONDecodeError as exc:  # an SSE event or body that is not JSON
            raise self._error(
                MalformedResponse,
                f"{self.name} returned a malformed response (not JSON: {exc.msg})",
                request.model,
            ) from None

    async def _collect(
        self, stream: openai.AsyncStream, model: str, on_tokens: TokenCallback | None
    ) -> ChatResult:
        parts: list[str] = []
        received = thinking = 0
        prompt_tokens = completion_tokens = 0
        finish_reason = None
        served_model = model
        async for chunk in stream:
            served_model = chunk.model or served_model
            usage = chunk.usage
            if usage is None and chunk.choices:
                # Moonshot reports usage inside the last choice rather than at the top level.
                usage = getattr(chunk.choices[0], "usage", None)
            if usage is not None:
                prompt_tokens = _usage_value(usage, "prompt_tokens")
                completion_tokens = _usage_value(usage, "completion_tokens")
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish_reason = choice.finish_reason or finish_reason
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                parts.append(delta.content)
                received += 1
                if on_tokens is not None:
                    on_tokens(received, False)
            elif getattr(delta, "reasoning_content", None):
                # Thinking models stream their reasoning first; it is not part of the answer.
                thinking += 1
                if on_tokens is not None:
                    on_tokens(thinking, True)
        text = "".join(parts)
        return ChatResult(
            text=text,
            model=served_model,
            provider=self.name,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens or received,
            finish_reason=finish_reason,
        )

    async def list_models(self, *, timeout: float) -> list[str]:
        try:
            page = await self._client.models.list(timeout=timeout)
            return [m.id for m in page.data]
        except openai.OpenAIError as exc:
            raise self._translate(exc, "") from None

    async def aclose(self) -> None:
        await self._client.close()

    def _translate(self, exc: openai.OpenAIError, model: str) -> ProviderError:
        """Map an SDK exception to our tree; every message is redacted (see `exai_mcp.redact`)."""
        who = f"{self.name} ({self.base_url})"
        if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError: it subclasses it
            return self._error(
                ProviderTimeout, f"{who} did not answer in time for model {model}", model
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return self._error(
                MalformedResponse, f"{who} returned a malformed response for {model}", model
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = self._detail(str(exc.__cause__ or exc))
            return self._error(
                Unreachable,
                f"cannot connect to {self.name} at {self.base_url}: {cause}. "
                f"Check the base URL ({self.base_url_variable}) and the network.",
                model,
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = self._detail(_error_detail(exc))
            if status in (401, 403):
                return self._error(
                    AuthRejected,
                    f"{self.name} rejected the API key in {self.key_variable} (HTTP {status}: "
                    f"{detail}). Check that the key is valid for {self.base_url}.",
                    model,
                )
            if status == 429:
                retry_after = _retry_after(exc.response.headers)
                hint = f"; the provider asks to wait {retry_after:g} s" if retry_after else ""
                return self._error(
                    RateLimited,
                    f"{who} is rate limiting requests (HTTP 429: {detail}){hint}",
                    model,
                    retry_after=retry_after,
                )
            if status >= 500:
                return self._error(
                    ProviderUnavailable, f"{who} failed with HTTP {status}: {detail}", model
                )
            if status == 404:
                what = f"model {model!r}" if model else "this request"
                return self._error(
                    BadRequest,
                    f"{who} answered HTTP 404 for {what}: {detail}. The model id may be "
                    "retired, or the base URL may lack its API prefix (/v1, /api/paas/v4).",
                    model,
                )
            return self._error(
                BadRequest, f"{who} refused the request (HTTP {status}): {detail}", model
            )
        return self._error(ProviderError, f"{who} failed: {self._detail(str(exc))}", model)

    def _detail(self, text: str) -> str:
        """The provider's own words, scrubbed and then cut (never the other way round)."""
        return self._redactor.redact(text, limit=DETAIL_LIMIT)

    def _error(
        self, kind: type[ProviderError], message: str, model: str, **extra: Any
    ) -> ProviderError:
        # The whole message is scrubbed again: a key may also hide in the base URL.
        return kind(self._redactor.redact(message), provider=self.name, model=model, **extra)


def _client_for(api_key: str, base_url: str) -> openai.AsyncOpenAI:
    """An SDK client that sends our key and nothing the SDK reads from `OPENAI_*` variables.

    AsyncOpenAI fills organization, project, admin key and webhook secret from OPENAI_ORG_ID,
    OPENAI_PROJECT_ID, OPENAI_ADMIN_KEY and OPENAI_WEBHOOK_SECRET, and adds every header in
    OPENAI_CUSTOM_HEADERS (whose Authorization even replaces ours). No constructor value turns
    that off (None means "read the variable", "" sends an empty header), so it is undone here.
    OPENAI_BASE_URL and OPENAI_API_KEY are only read when base_url / api_key are None.
    """
    client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    client.organization = client.project = None  # None: the header is omitted
    client.admin_api_key = client.webhook_secret = None
    client._custom_headers = {}  # what OPENAI_CUSTOM_HEADERS added (no public way to drop it)
    return client


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


def _usage_value(usage: object, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, 0)
    return int(value or 0)
