"""Resident memory: what a server creates once, and what serving stdio does not import at all.

Each saving here was measured against `scripts/bare_server.py` (the mcp low-level server plus
one `openai.AsyncOpenAI`); these tests keep it from coming back unnoticed.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import openai
from fake_provider import FakeProvider

from exai_mcp.providers.base import ChatRequest
from exai_mcp.providers.openai_compat import OpenAICompatibleProvider
from exai_mcp.providers.registry import create_providers
from tests.conftest import settings_for


def _pool(provider: OpenAICompatibleProvider) -> object:
    return provider._client._client._transport._pool  # type: ignore[attr-defined]


async def test_the_providers_of_one_server_load_the_ca_bundle_once(
    fake: FakeProvider, tmp_path: Path
) -> None:
    """One SSL context for every provider (each load of the CA bundle costs ~0.8 MiB), while
    each keeps its own HTTP client with the SDK's own timeout and connection limits."""
    providers = create_providers(settings_for(fake, tmp_path))
    kimi, glm = providers["kimi"], providers["glm"]
    assert isinstance(kimi, OpenAICompatibleProvider)
    assert isinstance(glm, OpenAICompatibleProvider)
    sdk_default = openai.AsyncOpenAI(api_key="x", base_url=fake.base_url("/v1"))._client
    try:
        assert kimi._client._client is not glm._client._client  # own pool, own headers
        assert _pool(kimi)._ssl_context is _pool(glm)._ssl_context  # type: ignore[attr-defined]
        context = _pool(kimi)._ssl_context  # type: ignore[attr-defined]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        default_pool = sdk_default._transport._pool  # type: ignore[attr-defined]
        for provider in (kimi, glm):
            http = provider._client._client
            assert http.timeout == sdk_default.timeout
            assert http.follow_redirects == sdk_default.follow_redirects
            for limit in ("_max_connections", "_max_keepalive_connections", "_keepalive_expiry"):
                assert getattr(_pool(provider), limit) == getattr(default_pool, limit)
        # Both still answer, each with its own key, then each closes its own client.
        for provider in (kimi, glm):
            request = ChatRequest(model="m", system="", user="hello")
            result = await provider.complete(request, timeout=10)
            assert result.text
        keys = [r.headers.get("authorization") for r in fake.requests]
        assert keys == ["Bearer kimi-test-key-123", "Bearer glm-test-key-456"]
    finally:
        for provider in (kimi, glm):
            await provider.aclose()
        await sdk_default.aclose()
    assert kimi._client.is_closed() and glm._client.is_closed()
