"""Kimi (Moonshot AI): OpenAI-compatible at https://api.moonshot.ai/v1 (China: api.moonshot.cn)."""

from __future__ import annotations

from exai_mcp.providers.openai_compat import OpenAICompatibleProvider

NAME = "kimi"
KEY_VARIABLE = "KIMI_API_KEY"


def create_kimi(*, api_key: str, base_url: str) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        name=NAME, api_key=api_key, base_url=base_url, key_variable=KEY_VARIABLE
    )
