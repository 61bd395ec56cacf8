"""Which models exist, which provider serves each, and how a requested name resolves.

Model ids rotate faster than releases, so besides the table any id is reachable with an
explicit provider prefix, the provider's registry name: `kimi:<id>` or `glm:<id>`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from exai_mcp.errors import ConfigError, InputError
from exai_mcp.providers.registry import PROVIDERS, SPECS, describe_all_key_variables

UNKNOWN_CONTEXT_WINDOW = 128_000


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    provider: str
    context_window: int
    aliases: tuple[str, ...] = ()


KNOWN_MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("kimi-k2-0905-preview", "kimi", 262_144, ("kimi-k2", "kimi")),
    ModelInfo("kimi-k2-turbo-preview", "kimi", 262_144, ("kimi-k2-turbo",)),
    ModelInfo("kimi-k2-0711-preview", "kimi", 131_072),
    ModelInfo("kimi-thinking-preview", "kimi", 131_072, ("kimi-thinking",)),
    ModelInfo("glm-4.6", "glm", 200_000, ("glm",)),
    ModelInfo("glm-4.5", "glm", 131_072),
    ModelInfo("glm-4.5-air", "glm", 131_072),
    ModelInfo("glm-4.5-flash", "glm", 131_072),
)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    provider: str
    id: str
    context_window: int

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.id}"


class ModelCatalog:
    """Resolves `auto`, aliases, table ids and `provider:id` against the configured providers."""

    def __init__(self, default_models: Mapping[str, str], default_model: str = "auto") -> None:
        # default_models: configured provider name -> its default model id, in preference order.
        self._defaults = dict(default_models)
        self._default_model = default_model
        self._by_name: dict[str, ModelInfo] = {}
        for info in KNOWN_MODELS:
            for name in (info.id, *info.aliases):
                self._by_name[name.lower()] = info

    def resolve(
        self, requested: str, *, available: Callable[[str], bool] = lambda _p: True
    ) -> ResolvedModel:
        """`available(provider)` lets `auto` skip a provider whose breaker is open."""
        name = requested.strip()
        if name.lower() == "auto":
            if self._default_model.lower() != "auto":
                return self.resolve(self._default_model)
            return self._auto(available)
        provider, sep, model_id = name.partition(":")
        if sep and provider.lower() in SPECS:
            if not model_id:
                raise InputError(f"model: {name!r} has no model id after the prefix")
            model = ResolvedModel(provider.lower(), model_id, self.context_window(model_id))
            return self._configured(model)
        info = self._by_name.get(name.lower())
        if info is None:
            prefixes = " / ".join(f"'{spec.name}:<id>'" for spec in PROVIDERS)
            raise InputError(
                f"model: {name!r} is not a known model. Use 'auto', one of "
                f"{', '.join(m.id for m in KNOWN_MODELS)}, or {prefixes} for "
                "any other id the provider serves."
            )
        return self._configured(ResolvedModel(info.provider, info.id, info.context_window))

    def context_window(self, model_id: str) -> int:
        info = self._by_name.get(model_id.lower())
        return info.context_window if info else UNKNOWN_CONTEXT_WINDOW

    def _auto(self, available: Callable[[str], bool]) -> ResolvedModel:
        if not self._defaults:
            raise ConfigError(
                f"no model provider is configured: set {describe_all_key_variables()} "
                "in the server's environment (or its .env file), then restart it"
            )
        ordered = sorted(self._defaults, key=lambda p: not available(p))
        provider = ordered[0]
        model_id = self._defaults[provider]
        return ResolvedModel(provider, model_id, self.context_window(model_id))

    def _configured(self, model: ResolvedModel) -> ResolvedModel:
        if model.provider not in self._defaults:
            raise ConfigError(
                f"model {model.id!r} is served by {model.provider}, which is not configured: "
                f"set {SPECS[model.provider].describe_key_variables()} in the server's "
                "environment, or pick another model"
            )
        return model
