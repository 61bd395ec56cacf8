"""Every model provider exai-mcp can call, each described once.

    titles = [spec.title for spec in PROVIDERS]  # in `model=auto` preference order
    kimi = SPECS["kimi"]                         # KIMI_API_KEY, KIMI_BASE_URL, ...
    providers = create_providers(settings)       # the configured ones, ready to call

A `ProviderSpec` holds what is true of a provider before any configuration: its name (the
`kimi:` / `glm:` model prefix and the key of every per-provider map), the variables that
configure it with their defaults, the placeholder the set-up snippets show for its key, and its
quirks. Settings, the server, `doctor` and the model table iterate over `PROVIDERS` rather
than naming providers. Adding one is a spec here plus its fields in `exai_mcp.config`
(which refuses to import while a spec has no fields).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from httpx2 import create_ssl_context

from exai_mcp.providers.glm import clamp_temperature
from exai_mcp.providers.openai_compat import OpenAICompatibleProvider

if TYPE_CHECKING:
    import ssl

    from exai_mcp.config import Settings
    from exai_mcp.providers.base import Provider


def _unchanged(temperature: float) -> float:
    return temperature


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider: its names, its variables and their defaults, and its quirks."""

    name: str
    title: str
    key_variables: tuple[str, ...]  # in precedence order; the first is the documented one
    base_url_variable: str
    base_url_default: str
    model_variable: str
    model_default: str
    max_inflight_variable: str
    max_inflight_default: int
    timeout_variable: str  # one attempt; unset follows WORKFLOW_TOOL_TIMEOUT_SECS
    key_placeholder: str  # what client snippets show instead of a key
    adjust_temperature: Callable[[float], float] = _unchanged

    @property
    def key_variable(self) -> str:
        """The documented key variable, named when none is set."""
        return self.key_variables[0]

    def describe_key_variables(self) -> str:
        """`GLM_API_KEY (or ZHIPUAI_API_KEY / ZAI_API_KEY)`: what to set, as messages say it."""
        first, *others = self.key_variables
        return f"{first} (or {' / '.join(others)})" if others else first


KIMI = ProviderSpec(
    name="kimi",
    title="Kimi (Moonshot)",
    key_variables=("KIMI_API_KEY", "MOONSHOT_API_KEY"),
    base_url_variable="KIMI_BASE_URL",
    base_url_default="https://api.moonshot.ai/v1",  # China: https://api.moonshot.cn/v1
    model_variable="KIMI_DEFAULT_MODEL",
    model_default="kimi-k2-0905-preview",
    max_inflight_variable="EXAI_KIMI_MAX_INFLIGHT",
    max_inflight_default=6,
    timeout_variable="KIMI_TIMEOUT_SECS",
    key_placeholder="your-kimi-api-key",
)

GLM = ProviderSpec(
    name="glm",
    title="GLM (Zhipu / Z.ai)",
    key_variables=("GLM_API_KEY", "ZHIPUAI_API_KEY", "ZAI_API_KEY"),
    base_url_variable="GLM_BASE_URL",
    base_url_default="https://api.z.ai/api/paas/v4",  # China: https://open.bigmodel.cn/api/paas/v4
    model_variable="GLM_DEFAULT_MODEL",
    model_default="glm-4.6",
    max_inflight_variable="EXAI_GLM_MAX_INFLIGHT",
    max_inflight_default=4,
    timeout_variable="GLM_TIMEOUT_SECS",
    key_placeholder="your-glm-api-key",
    adjust_temperature=clamp_temperature,
)

PROVIDERS: tuple[ProviderSpec, ...] = (KIMI, GLM)
"""Every provider, in the order `model=auto` prefers them."""

SPECS: Mapping[str, ProviderSpec] = MappingProxyType({spec.name: spec for spec in PROVIDERS})
"""The specs by name: `SPECS["glm"]`, `name in SPECS`."""


def describe_all_key_variables() -> str:
    """`KIMI_API_KEY (or MOONSHOT_API_KEY) or GLM_API_KEY (or ...)`: any of them configures one."""
    return " or ".join(spec.describe_key_variables() for spec in PROVIDERS)


def create_provider(
    spec: ProviderSpec,
    *,
    api_key: str,
    base_url: str,
    key_variable: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> OpenAICompatibleProvider:
    """One provider client; `key_variable` is where the key came from, named in auth errors.

    `ssl_context`: TLS verification shared with other providers (else the client loads its own).
    """
    return OpenAICompatibleProvider(
        name=spec.name,
        api_key=api_key,
        base_url=base_url,
        key_variable=key_variable or spec.key_variable,
        base_url_variable=spec.base_url_variable,
        timeout_variable=spec.timeout_variable,
        max_inflight_variable=spec.max_inflight_variable,
        adjust_temperature=spec.adjust_temperature,
        ssl_context=ssl_context,
    )


def create_providers(settings: Settings) -> dict[str, Provider]:
    """A client for each configured provider, by name, in `model=auto` preference order.

    Each names in its auth errors the variable its key actually came from. They verify TLS
    with one SSL context, built as the SDK builds its own (httpx2's defaults: SSL_CERT_FILE /
    SSL_CERT_DIR, else the system's CA bundle), so the CA bundle is loaded once, not per provider.
    Each keeps its own HTTP client: connection pool, limits, key, base URL and headers.
    """
    configured_providers = settings.configured_providers()
    shared_tls = create_ssl_context() if configured_providers else None
    providers: dict[str, Provider] = {}
    for configured in configured_providers:
        assert configured.api_key is not None  # configured means it has a key
        providers[configured.spec.name] = create_provider(
            configured.spec,
            api_key=configured.api_key.get_secret_value(),
            base_url=configured.base_url,
            key_variable=configured.key_variable,
            ssl_context=shared_tls,
        )
    return providers


__all__ = [
    "GLM",
    "KIMI",
    "PROVIDERS",
    "SPECS",
    "ProviderSpec",
    "create_provider",
    "create_providers",
    "describe_all_key_variables",
]
