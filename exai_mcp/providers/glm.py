"""GLM (Zhipu / Z.ai), reached through its OpenAI-compatible API v4 endpoint.

The `zhipuai` SDK is not used: every 2.x pins PyJWT < 2.9 while `mcp` needs >= 2.10.1, and its
successor `zai-sdk` has no asyncio client.
"""

from __future__ import annotations

from exai_mcp.providers.openai_compat import OpenAICompatibleProvider

NAME = "glm"
KEY_VARIABLE = "GLM_API_KEY"


def clamp_temperature(value: float) -> float:
    """GLM accepts temperature only inside (0, 1); clamp as Zhipu's own SDK does."""
    if value >= 1:
        return 0.99
    if value <= 0:
        return 0.01
    return value


def create_glm(*, api_key: str, base_url: str) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        name=NAME,
        api_key=api_key,
        base_url=base_url,
        key_variable=KEY_VARIABLE,
        adjust_temperature=clamp_temperature,
    )
