"""Provider failures become errors the assistant can act on; the key never appears in them.

The providers are exercised with the real `openai` SDK over real HTTP against the fake.
Secrecy is checked as "no eight consecutive characters of the key" (`leaked_runs`).
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import httpx2
import openai
import pytest
from fake_provider import FakeProvider, Reply

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
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.middleware.retry import RetryPolicy, call_with_retries
from exai_mcp.providers.base import ChatRequest
from exai_mcp.providers.glm import clamp_temperature, create_glm
from exai_mcp.providers.kimi import create_kimi
from tests.conftest import in_process_client, settings_for
from tests.test_redaction import KEY as LONG_KEY
from tests.test_redaction import leaked_runs

KEY = "sk-very-secret-key-0042"
REQUEST = ChatRequest(model="kimi-k2-0905-preview", system="be brief", user="hello")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def failure(provider, *, timeout: float = 5) -> ProviderError:
    """The error one completion raises; the provider's HTTP client is closed either way."""
    try:
        await provider.complete(REQUEST, timeout=timeout)
    except ProviderError as exc:
        return exc
    finally:
        await provider.aclose()
    raise AssertionError("the call was expected to fail")


async def test_rejected_key_names_the_variable_and_never_the_key(fake: FakeProvider) -> None:
    fake.enqueue(Reply(status=401, error_message=f"Invalid key {KEY}"))
    error = await failure(create_kimi(api_key=KEY, base_url=fake.base_url("/v1")))
    assert isinstance(error, AuthRejected)
    assert "KIMI_API_KEY" in str(error)
    assert KEY not in str(error)


async def test_rate_limit_carries_the_providers_retry_after(fake: FakeProvider) -> None:
    fake.enqueue(Reply(status=429, retry_after=7))
    error = await failure(create_glm(api_key=KEY, base_url=fake.base_url("/api/paas/v4")))
    assert isinstance(error, RateLimited)
    assert error.retry_after == 7
    assert str(error).startswith("glm:kimi-k2-0905-preview is rate limited")
    assert "wait 7 s" in str(error) and "EXAI_GLM_MAX_INFLIGHT" in str(error)


async def test_provider_5xx_is_unavailable_and_retryable(fake: FakeProvider) -> None:
    fake.enqueue(Reply(status=503, error_message="overloaded"))
    error = await failure(create_kimi(api_key=KEY, base_url=fake.base_url("/v1")))
    assert isinstance(error, ProviderUnavailable)
    assert error.retryable
    assert "HTTP 503" in str(error) and "overloaded" in str(error)


async def test_unknown_model_is_a_bad_request_that_is_not_retried(fake: FakeProvider) -> None:
    fake.enqueue(Reply(status=404, error_message="model not found"))
    error = await failure(create_kimi(api_key=KEY, base_url=fake.base_url("/v1")))
    assert isinstance(error, BadRequest)
    assert not error.retryable
    assert "may be retired" in str(error) and "kimi-k2-0905-preview" in str(error)


async def test_slow_provider_is_a_timeout(fake: FakeProvider) -> None:
    fake.enqueue(Reply(hang=True))
    error = await failure(create_kimi(api_key=KEY, base_url=fake.base_url("/v1")), timeout=0.2)
    assert isinstance(error, ProviderTimeout)


async def test_unreachable_base_url_is_printed() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    error = await failure(create_kimi(api_key=KEY, base_url=url), timeout=2)
    assert isinstance(error, Unreachable)
    assert url in str(error) and "KIMI_BASE_URL" in str(error)


@pytest.mark.parametrize(
    "body",
    [b"data: {not json\n\n", b"data: [1, 2]\n\n", b'data: {"choices": [7]}\n\n'],
    ids=["not-json", "json-list", "choice-not-an-object"],
)
async def test_an_sse_event_that_is_not_a_chunk_is_the_providers_malformed_response(
    fake: FakeProvider, body: bytes
) -> None:
    fake.enqueue(Reply(malformed=True, malformed_body=body))
    error = await failure(create_kimi(api_key=KEY, base_url=fake.base_url("/v1")))
    assert isinstance(error, MalformedResponse) and error.retryable
    assert str(error).startswith("kimi:kimi-k2-0905-preview returned a malformed response")


async def test_a_page_in_place_of_the_stream_is_a_malformed_response_quoting_it(
    fake: FakeProvider,
) -> None:
    page = b"<html><body>Captive portal: please log in</body></html>"
    fake.enqueue(Reply(malformed=True, malformed_body=page, content_type="text/html"))
    error = await failure(create_kimi(api_key=KEY, base_url=fake.base_url("/v1")))
    assert isinstance(error, MalformedResponse) and error.retryable
    assert str(error).startswith(
        "kimi:kimi-k2-0905-preview returned a malformed response (not an event stream but "
        "text/html: '<html><body>Captive portal"
    )


async def test_a_gateway_that_ignores_stream_still_gives_its_whole_answer(
    fake: FakeProvider,
) -> None:
    completion = {
        "model": "kimi-k2-0905-preview",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "whole"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    body = json.dumps(completion).encode()
    fake.enqueue(Reply(malformed=True, malformed_body=body, content_type="application/json"))
    provider = create_kimi(api_key=KEY, base_url=fake.base_url("/v1"))
    try:
        result = await provider.complete(REQUEST, timeout=5)
    finally:
        await provider.aclose()
    assert (result.text, result.prompt_tokens, result.completion_tokens) == ("whole", 5, 1)


@pytest.mark.parametrize(
    ("body", "content_type", "opening"),
    [
        (
            b'{"error": {"message": "upstream exploded", "type": "server_error"}}',
            "application/json",
            "answered with an error instead of a stream (HTTP 200: upstream exploded)",
        ),
        (
            b'data: {"error": {"message": "quota exceeded"}}\n\n',
            None,
            "sent an error in place of its answer (quota exceeded)",
        ),
    ],
    ids=["json-error-with-200", "error-event-in-the-stream"],
)
async def test_an_error_sent_with_status_200_is_the_providers_and_is_retried(
    fake: FakeProvider, body: bytes, content_type: str | None, opening: str
) -> None:
    fake.enqueue(Reply(malformed=True, malformed_body=body, content_type=content_type))
    error = await failure(create_kimi(api_key=KEY, base_url=fake.base_url("/v1")))
    assert isinstance(error, ProviderUnavailable) and error.retryable
    assert str(error).startswith(f"kimi:kimi-k2-0905-preview {opening}")
    assert error.advice.startswith("call again later")


@pytest.mark.parametrize("status", [408, 409])
async def test_request_timeout_and_conflict_are_retried_like_the_sdk_does(
    fake: FakeProvider, status: int
) -> None:
    fake.enqueue(Reply(status=status, error_message="try again"))
    error = await failure(create_kimi(api_key=KEY, base_url=fake.base_url("/v1")))
    assert isinstance(error, ProviderUnavailable) and error.retryable
    assert f"could not take the request just now (HTTP {status}: try again)" in str(error)


def test_glm_temperature_is_clamped_into_its_open_interval() -> None:
    assert [clamp_temperature(t) for t in (0, 0.5, 1)] == [0.01, 0.5, 0.99]


async def test_streamed_answer_equals_the_plain_answer_and_counts_tokens(
    fake: FakeProvider,
) -> None:
    fake.answer = "one two three four five"
    seen: list[tuple[int, bool]] = []
    provider = create_kimi(api_key=KEY, base_url=fake.base_url("/v1"))
    result = await provider.complete(
        REQUEST, timeout=5, on_tokens=lambda n, thinking: seen.append((n, thinking))
    )
    await provider.aclose()
    assert result.text == "one two three four five"
    assert seen and [n for n, _ in seen] == sorted(n for n, _ in seen)
    assert not any(thinking for _, thinking in seen)
    assert result.completion_tokens > 0 and result.prompt_tokens > 0
    assert fake.chat_requests[0].body["stream"] is True


async def test_a_thinking_models_reasoning_is_reported_but_kept_out_of_the_answer(
    fake: FakeProvider,
) -> None:
    fake.reasoning = "first I consider the loop bound, then the caller"
    fake.answer = "The loop bound is off by one."
    seen: list[tuple[int, bool]] = []
    provider = create_glm(api_key=KEY, base_url=fake.base_url("/api/paas/v4"))
    result = await provider.complete(
        REQUEST, timeout=5, on_tokens=lambda n, thinking: seen.append((n, thinking))
    )
    await provider.aclose()
    assert result.text == "The loop bound is off by one."
    phases = [thinking for _, thinking in seen]
    assert phases[0] is True and phases[-1] is False  # reasoning first, then the answer
    assert phases == sorted(phases, reverse=True)


async def test_retries_stop_at_the_first_error_that_cannot_be_helped(fake: FakeProvider) -> None:
    fake.enqueue(Reply(status=500), Reply(status=400), Reply())
    provider = create_kimi(api_key=KEY, base_url=fake.base_url("/v1"))
    retried: list[int] = []
    with pytest.raises(BadRequest):
        await call_with_retries(
            lambda: provider.complete(REQUEST, timeout=2),
            policy=RetryPolicy(max_attempts=5, initial_delay=0.01, max_delay=0.02, jitter=0),
            deadline=Deadline.after(5),
            on_retry=lambda n, exc, delay: retried.append(n),
        )
    await provider.aclose()
    assert fake.chat_count == 2 and retried == [1]


async def test_the_assistant_reads_the_mapped_error_through_mcp(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(status=401))
    settings = settings_for(fake, tmp_path, KIMI_API_KEY=KEY)
    async with in_process_client(settings) as client:
        result = await client.call_tool("analyze", {"text": "x", "model": "kimi-k2"})
    assert result.is_error
    assert "KIMI_API_KEY" in result.content[0].text and KEY not in result.content[0].text
    assert fake.chat_count == 1  # an auth failure is never retried


def key_echoed_at(offset: int) -> str:
    """A long provider error echoing `Bearer <key>` with the key starting at `offset`."""
    filler = "the upstream gateway rejected the request sent with these headers; " * 20
    return filler[: offset - len("Bearer ")] + f"Bearer {LONG_KEY} (echoed)" + " and more" * 20


async def test_a_key_echoed_across_the_cut_leaves_no_fragment_at_any_offset(
    fake: FakeProvider,
) -> None:
    statuses = (401, 403, 429, 500, 503, 404, 400, 422)  # every branch of the translation
    provider = create_kimi(api_key=LONG_KEY, base_url=fake.base_url("/v1"))
    try:
        for offset in range(460, 521):
            status = statuses[offset % len(statuses)]
            fake.enqueue(Reply(status=status, error_message=key_echoed_at(offset)))
            with pytest.raises(ProviderError) as caught:
                await provider.complete(REQUEST, timeout=5)
            message = str(caught.value)
            assert not leaked_runs(message, LONG_KEY), (offset, status, message[-120:])
            assert "upstream gateway rejected" in message  # the provider's words are kept
    finally:
        await provider.aclose()
    assert fake.chat_count == 61


async def test_listing_models_masks_the_key_even_in_a_base_url_it_was_pasted_into(
    fake: FakeProvider,
) -> None:
    fake.require_key = "a-different-key"
    provider = create_glm(api_key=LONG_KEY, base_url=fake.base_url(f"/v4/{LONG_KEY}"))
    try:
        with pytest.raises(AuthRejected) as caught:
            await provider.list_models(timeout=5)
    finally:
        await provider.aclose()
    assert fake.requests[0].path == f"/v4/{LONG_KEY}/models"
    assert "HTTP 401" in str(caught.value) and not leaked_runs(str(caught.value), LONG_KEY)


@pytest.mark.parametrize(
    "exc",
    [
        openai.APIConnectionError(request=httpx2.Request("POST", "http://127.0.0.1:9/v1")),
        openai.OpenAIError(key_echoed_at(495)),
    ],
    ids=["connection-error-cause", "generic-sdk-error"],
)
def test_errors_without_an_http_answer_are_redacted_too(exc: openai.OpenAIError) -> None:
    if isinstance(exc, openai.APIConnectionError):
        exc.__cause__ = OSError(key_echoed_at(495))  # e.g. a proxy's refusal echoing the header
    provider = create_kimi(api_key=LONG_KEY, base_url="http://127.0.0.1:9/v1")
    message = str(provider._translate(exc, "kimi-k2"))
    assert "upstream gateway rejected" in message and not leaked_runs(message, LONG_KEY)


async def test_the_tool_result_and_the_log_hold_no_fragment_of_an_echoed_key(
    fake: FakeProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything any logger writes, SDK and HTTP client included
    fake.enqueue(
        Reply(status=401, error_message=key_echoed_at(480))
    )  # 20 characters before the cut
    settings = settings_for(fake, tmp_path, KIMI_API_KEY=LONG_KEY)
    async with in_process_client(settings) as client:
        result = await client.call_tool("analyze", {"text": "x", "model": "kimi-k2"})
    assert result.is_error and "KIMI_API_KEY" in result.content[0].text
    assert not leaked_runs(result.content[0].text, LONG_KEY)
    assert "rejected the API key" in caplog.text  # the failure was logged...
    assert not leaked_runs(caplog.text, LONG_KEY)  # ...without the key


async def test_openai_account_settings_in_the_environment_never_reach_the_provider(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-from-env")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-from-env")
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv(
        "OPENAI_CUSTOM_HEADERS", "X-From-Env: yes\nAuthorization: Bearer sk-openai-from-env"
    )
    provider = create_kimi(api_key=KEY, base_url=fake.base_url("/v1"))
    try:
        await provider.complete(REQUEST, timeout=5)
        await provider.list_models(timeout=5)
    finally:
        await provider.aclose()
    assert [r.path for r in fake.requests] == ["/v1/chat/completions", "/v1/models"]
    for request in fake.requests:
        assert not {"openai-organization", "openai-project", "x-from-env"} & set(request.headers)
        assert request.headers["authorization"] == f"Bearer {KEY}"
