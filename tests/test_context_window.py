"""A prompt that cannot fit the model's context window is refused before anything is paid."""

from __future__ import annotations

import re
from pathlib import Path

from fake_provider import FakeProvider
from mcp import Client

from tests.conftest import (
    in_process_client,
    provider_env,
    read_status,
    settings_for,
    settings_for_two,
    stdio_params,
)
from tests.test_workflow import step

TOO_BIG = "x" * 1_200_000  # about 300,000 tokens, over kimi-k2's 262,144


async def test_text_over_the_window_is_refused_with_zero_provider_requests_and_the_numbers(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with Client(stdio_params(provider_env(fake, tmp_path))) as client:
        result = await client.call_tool("analyze", {"text": TOO_BIG, "model": "kimi-k2"})
        status = await read_status(client)
    assert result.is_error
    text = result.content[0].text
    assert text.startswith("kimi:kimi-k2-0905-preview cannot take this prompt"), text
    estimate = int(re.search(r"about ([\d,]+) tokens estimated", text)[1].replace(",", ""))
    assert 300_000 <= estimate < 301_000
    assert "262,144-token context window" in text and "less 20,000 kept for the answer" in text
    assert "shorter text" in text and "fewer files" in text and "larger context window" in text
    assert fake.chat_count == 0
    assert status["providers"]["kimi"]["requests"] == 0


async def test_auto_moves_a_prompt_too_large_for_one_model_to_a_provider_with_room(
    fake: FakeProvider, glm_fake: FakeProvider, tmp_path: Path
) -> None:
    # Kimi's default here has 131,072 tokens; GLM's glm-4.6 has 200,000.
    settings = settings_for_two(fake, glm_fake, tmp_path, KIMI_DEFAULT_MODEL="kimi-k2-0711-preview")
    text = "y" * 560_000  # about 140,000 tokens
    async with in_process_client(settings) as client:
        routed = await client.call_tool("analyze", {"text": text})
        named = await client.call_tool(
            "analyze", {"text": text + "z", "model": "kimi-k2-0711-preview"}
        )
    assert not routed.is_error, routed.content
    assert routed.structured_content["provider"] == "glm"
    assert named.is_error and "kimi:kimi-k2-0711-preview cannot take" in named.content[0].text
    assert fake.chat_count == 0 and glm_fake.chat_count == 1


async def test_files_alone_that_cannot_be_sent_are_not_paid_for(
    fake: FakeProvider, tmp_path: Path
) -> None:
    big = tmp_path / "big.txt"
    big.write_text(TOO_BIG)
    settings = settings_for(fake, tmp_path, EXAI_MAX_FILE_BYTES=2_000_000)
    async with in_process_client(settings) as client:
        result = await client.call_tool("analyze", {"files": [str(big)], "model": "kimi-k2"})
    assert result.is_error
    text = result.content[0].text
    assert text.startswith(
        "none of the files could be sent to kimi:kimi-k2-0905-preview, and there is no text to "
        "ask about, so nothing was sent to the provider"
    ), text
    assert f"{big}: over the token budget" in text
    assert fake.chat_count == 0


async def test_a_workflow_too_large_for_the_model_is_told_how_to_shrink_its_thread(
    fake: FakeProvider, tmp_path: Path
) -> None:
    final = step(1, total=1, findings=TOO_BIG, model="kimi-k2")
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        result = await client.call_tool("workflow", final)
    assert result.is_error
    assert "resend an earlier step_number with shorter findings" in result.content[0].text
    assert "shorter text" not in result.content[0].text  # a workflow has no `text`
    assert fake.chat_count == 0


async def test_chinese_text_is_estimated_by_its_bytes_not_its_characters(
    fake: FakeProvider, tmp_path: Path
) -> None:
    """400,000 Chinese characters are far more than 100,000 tokens: they must not be sent."""
    chinese = "测试文本的长度" * 57_143  # about 400,000 characters, 1.2 MB of UTF-8
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        result = await client.call_tool("analyze", {"text": chinese, "model": "kimi-k2"})
    assert result.is_error
    assert result.content[0].text.startswith("kimi:kimi-k2-0905-preview cannot take this prompt")
    assert fake.chat_count == 0
