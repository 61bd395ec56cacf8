"""Resident memory: what a server creates once, and what serving stdio does not import at all.

Each saving here was measured against `scripts/bare_server.py` (the mcp low-level server plus
one `openai.AsyncOpenAI`); these tests keep it from coming back unnoticed.
"""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path

import openai
import pytest
from fake_provider import FakeProvider
from mcp import Client, StdioServerParameters, stdio_client
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exai_mcp.middleware.metrics import CALL_BUCKETS, LabeledBuckets
from exai_mcp.observability.metrics import by_label, histogram
from exai_mcp.providers.base import ChatRequest
from exai_mcp.providers.openai_compat import OpenAICompatibleProvider
from exai_mcp.providers.registry import create_providers
from tests.conftest import provider_env, settings_for, stdio_params

NOT_LOADED_WHEN_SERVING_STDIO = (
    "prometheus_client",  # only with /metrics: serve --http, or EXAI_METRICS_PORT
    "exai_mcp.observability.metrics",
    "tenacity",  # retries are a plain loop (exai_mcp.middleware.retry)
    "exai_mcp.doctor",  # `exai-mcp doctor` only
    "opentelemetry.sdk",  # only with OTEL_EXPORTER_OTLP_ENDPOINT
    "redis",  # only with EXAI_REDIS_URL
    "difflib",  # only to suggest the field a misspelt argument meant
)
"""Modules a stdio server answering `analyze` and `status` must never import."""

# Runs the real command's entry point; at exit (stdin closed) writes the modules it loaded
# to stderr, as one JSON line, once the MCP session has given stdout back.
REPORT_MODULES = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: print('MODULES ' + json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
    "from exai_mcp.cli import main\n"
    "main([])\n"
)


async def modules_after_serving(env: dict[str, str], errlog: Path) -> set[str]:
    """The modules a real stdio server loaded by the time it answered analyze and status."""
    base = stdio_params(env)
    params = StdioServerParameters(
        command=sys.executable, args=["-c", REPORT_MODULES], env=base.env
    )
    with errlog.open("w+") as err:
        async with Client(stdio_client(params, errlog=err)) as client:
            answer = await client.call_tool("analyze", {"text": "which modules?"})
            status = await client.call_tool("status", {})
        # Leaving the client closed stdin and waited for the server to exit.
        err.seek(0)
        stderr = err.read()
    assert not answer.is_error and not status.is_error
    report = [line for line in stderr.splitlines() if line.startswith("MODULES ")]
    assert len(report) == 1, stderr[-2000:]
    return set(json.loads(report[0].removeprefix("MODULES ")))


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


async def test_a_stdio_server_without_a_metrics_port_never_loads_prometheus(
    fake: FakeProvider, tmp_path: Path
) -> None:
    loaded = await modules_after_serving(provider_env(fake, tmp_path), tmp_path / "stderr")
    assert "exai_mcp.server" in loaded  # it did serve
    for module in NOT_LOADED_WHEN_SERVING_STDIO:
        assert not {m for m in loaded if m == module or m.startswith(f"{module}.")}, module


async def test_with_a_metrics_port_the_stdio_server_loads_prometheus(
    fake: FakeProvider, tmp_path: Path
) -> None:
    """The control for the test above: the report does see what a server imports."""
    env = provider_env(fake, tmp_path, EXAI_METRICS_PORT="0")
    assert "prometheus_client" in await modules_after_serving(env, tmp_path / "stderr")


class _Family(Collector):
    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> list[Metric]:
        return [self.family]


def _scrape(collector: Collector, accept: str) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    encoder, _content_type = choose_encoder(accept)
    return encoder(registry)


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
def test_histograms_scrape_exactly_as_prometheus_client_histograms(accept: str) -> None:
    """The bucket counts kept instead of `prometheus_client.Histogram` (not imported while
    serving stdio) scrape to the very bytes the Histogram gave: names, labels, buckets."""
    name, documentation = "exai_limit_wait_seconds", "Time waited, by limit."
    reference = Histogram(name, documentation, ["limit"], registry=None, buckets=CALL_BUCKETS)
    ours = LabeledBuckets()
    values = [0.0, 0.004, 0.005, 0.0051, 0.3, 1, 1.0000001, 2.5, 599.9, 600, 600.1, 1e9]
    for limit, observed in (("kimi", values), ("global", values[::3]), ("glm", [])):
        reference.labels(limit)
        ours.labels(limit).created = reference.labels(limit)._created  # type: ignore[attr-defined]
        for value in observed:
            reference.labels(limit).observe(value)
            ours.observe(limit, value)
    expected = _scrape(reference, accept)
    assert b'le="+Inf"' in expected and b"_created" in expected
    assert _scrape(_Family(histogram(name, documentation, by_label("limit", ours))), accept) == (
        expected
    )
