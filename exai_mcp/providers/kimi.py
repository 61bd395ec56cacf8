"""Kimi (Moonshot AI): OpenAI-compatible at https://api.moonshot.ai/v1 (China: api.moonshot.cn).

Its names, variables and defaults are `exai_mcp.providers.registry.KIMI`; it has no quirks.
"""

from __future__ import annotations

from exai_mcp.providers.openai_compat import OpenAICompatibleProvider
from exai_mcp.providers.registry import KIMI, create_provider


def create_kimi(
    *, api_key: str, base_url: str, key_variable: str | None = None
) -> OpenAICompatibleProvider:
    return create_provider(KIMI, api_key=api_key, base_url=base_url, key_variable=key_variable)
