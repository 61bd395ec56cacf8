"""A provider that hangs, fails or rejects its key is paused, and `auto` moves to the other one.

Kimi and GLM are two separate fake providers here, so one can misbehave while the other works.
"""

from __future__ import annotations

from pathlib import Path

from fake_provider import FakeProvider, Reply

from tests.conftest import in_process_client, read_status, settings_for, settings_for_two


async def test_a_hanging_provider_opens_its_breaker_and_auto_moves_to_the_other(
    fake: FakeProvider, glm_fake: FakeProvider, tmp_path: Path
) -> None:
    # KIMI_TIMEOUT_SECS defaults to T: each call's one attempt uses its whole budget, and
    # that timeout must still count against the breaker.
    fake.hold()
    settings = settings_for_two(
        fake, glm_fake, tmp_path, WORKFLOW_TOOL_TIMEOUT_SECS=1, EXAI_BREAKER_FAILURES=2
    )
    async with in_process_client(settings) as client:
        first = await client.call_tool("analyze", {"text": "q1", "model": "kimi-k2"})
        second = await client.call_tool("analyze", {"text": "q2", "model": "kimi-k2"})
        routed = await client.call_tool("analyze", {"text": "q3", "model": "auto"})
        status = await read_status(client)
        fake.release()
    assert first.is_error and second.is_error
    assert status["providers"]["kimi"]["breaker"]["state"] == "open"
    assert "kimi:kimi-k2-0905-preview timed out" in status["providers"]["kimi"]["breaker"]["reason"]
    assert status["providers"]["kimi"]["available_for_auto"] is False
    assert not routed.is_error, routed.content
    assert routed.structured_content["provider"] == "glm"
    assert fake.chat_count == 2 and glm_fake.chat_count == 1


async def test_no_attempt_is_sent_once_the_breaker_has_opened(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(status=503), Reply(status=503), Reply(status=503))
    settings = settings_for(fake, tmp_path, EXAI_BREAKER_FAILURES=1, EXAI_MAX_ATTEMPTS=3)
    async with in_process_client(settings) as client:
        result = await client.call_tool("analyze", {"text": "q", "model": "kimi-k2"})
    assert result.is_error
    assert "kimi is paused" in result.content[0].text
    assert "HTTP 503" in result.content[0].text  # the cause is kept in the message
    assert fake.chat_count == 1  # attempts 2 and 3 met the open breaker


async def test_a_rejected_key_pauses_the_provider_and_auto_answers_from_the_other(
    fake: FakeProvider, glm_fake: FakeProvider, tmp_path: Path
) -> None:
    fake.require_key = "the-real-kimi-key"
    settings = settings_for_two(fake, glm_fake, tmp_path, KIMI_API_KEY="your-kimi-api-key")
    async with in_process_client(settings) as client:
        first = await client.call_tool("analyze", {"text": "q1"})
        second = await client.call_tool("analyze", {"text": "q2"})
        status = await read_status(client)
    assert not first.is_error, first.content
    assert first.structured_content["provider"] == "glm"
    assert second.structured_content["provider"] == "glm"
    assert fake.chat_count == 1  # the second call went straight to GLM
    kimi = status["providers"]["kimi"]
    assert kimi["breaker"]["state"] == "open" and kimi["available_for_auto"] is False
    assert "API key was rejected" in kimi["breaker"]["reason"]
    assert "KIMI_API_KEY" in kimi["breaker"]["reason"]


async def test_a_named_model_reports_its_own_providers_error_without_moving(
    fake: FakeProvider, glm_fake: FakeProvider, tmp_path: Path
) -> None:
    fake.require_key = "the-real-kimi-key"
    settings = settings_for_two(fake, glm_fake, tmp_path)
    async with in_process_client(settings) as client:
        result = await client.call_tool("analyze", {"text": "q", "model": "kimi-k2"})
    assert result.is_error and "rejected the API key in KIMI_API_KEY" in result.content[0].text
    assert glm_fake.chat_count == 0


async def test_malformed_replies_are_retried_and_count_against_the_breaker(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(malformed=True), Reply(malformed=True))
    settings = settings_for(fake, tmp_path, EXAI_BREAKER_FAILURES=2, EXAI_MAX_ATTEMPTS=3)
    async with in_process_client(settings) as client:
        result = await client.call_tool("analyze", {"text": "q", "model": "kimi-k2"})
        status = await read_status(client)
    text = result.content[0].text
    assert result.is_error and "internal error" not in text
    assert "kimi:kimi-k2-0905-preview returned a malformed response" in text
    assert fake.chat_count == 2  # retried once, then the breaker stopped the third attempt
    assert status["providers"]["kimi"]["errors"] == {"malformed": 2}


async def test_a_named_model_is_never_served_the_answer_auto_got_from_another_provider(
    fake: FakeProvider, glm_fake: FakeProvider, tmp_path: Path
) -> None:
    fake.require_key = "the-real-kimi-key"  # kimi rejects its key: auto answers from GLM
    settings = settings_for_two(fake, glm_fake, tmp_path)
    async with in_process_client(settings) as client:
        routed = await client.call_tool("analyze", {"text": "q"})
        named = await client.call_tool("analyze", {"text": "q", "model": "kimi-k2"})
    assert routed.structured_content["provider"] == "glm"
    assert named.is_error and "kimi is paused" in named.content[0].text  # not GLM's answer
