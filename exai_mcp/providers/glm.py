"""GLM (Zhipu / Z.ai), reached through its OpenAI-compatible API v4 endpoint.

Its names, variables and defaults are `exai_mcp.providers.registry.GLM`; its quirk is here.
The `zhipuai` SDK is not used: every 2.x pins PyJWT < 2.9 while `mcp` needs >= 2.10.1, and its
successor `zai-sdk` has no asyncio client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exai_mcp.providers.openai_compat import OpenAICompatibleProvider


def clamp_temperature(value: float) -> float:
    """GLM accepts temperature only inside (0, 1); clamp as Zhipu's own SDK does."""
    if value >= 1:
        return 0.99
    if value <= 0:
        return 0.01
    return value


def create_glm(
    *, api_key: str, base_url: str, key_variable: str | None = None
) -> OpenAICompatibleProvider:
    # Imported here: the registry imports this module for the quirk above.
    from exai_mcp.providers.registry import GLM, create_provider

    return create_provider(GLM, api_key=api_key, base_url=base_url, key_variable=key_variable)
