"""The whole path as a client uses it: subprocess over stdio, real SDK, real HTTP."""

from __future__ import annotations

from pathlib import Path

from fake_provider import FakeProvider
from mcp import Client

from tests.conftest import provider_env, stdio_params


async def test_analyze_answers_from_a_kimi_model_and_a_glm_model(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with Client(stdio_params(provider_env(fake, tmp_path))) as client:
        kimi = await client.call_tool(
            "analyze", {"text": "Is this design sound?", "model": "kimi-k2"}
        )
        glm = await client.call_tool(
            "analyze", {"text": "Is this design sound?", "model": "glm-4.6"}
        )

    assert not kimi.is_error and not glm.is_error
    assert kimi.structured_content["provider"] == "kimi"
    assert kimi.structured_content["model"] == "kimi-k2-0905-preview"
    assert glm.structured_content["provider"] == "glm"
    assert "Fake expert answer from glm-4.6" in glm.content[0].text
    paths = [r.path for r in fake.chat_requests]
    assert paths == ["/v1/chat/completions", "/api/paas/v4/chat/completions"]
    assert fake.chat_requests[0].headers["authorization"] == "Bearer kimi-test-key-123"


async def test_old_clients_minimal_call_works_and_reports_usage(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with Client(stdio_params(provider_env(fake, tmp_path))) as client:
        result = await client.call_tool("analyze", {"text": "test"})

    assert not result.is_error
    data = result.structured_content
    assert data["analysis"].startswith("Fake expert answer")
    assert data["usage"]["prompt_tokens"] > 0 and data["usage"]["completion_tokens"] > 0
    assert data["duration_ms"] >= 0 and data["cached"] is False


async def test_server_without_keys_lists_tools_and_says_which_variable_to_set(
    tmp_path: Path,
) -> None:
    env = {"EXAI_STATE_DB": str(tmp_path / "s.db")}
    async with Client(stdio_params(env)) as client:
        tools = await client.list_tools()
        result = await client.call_tool("analyze", {"text": "test"})

    assert {t.name for t in tools.tools} >= {"analyze", "status"}
    assert result.is_error
    assert "KIMI_API_KEY" in result.content[0].text and "GLM_API_KEY" in result.content[0].text
