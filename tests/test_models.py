"""Model names resolve to a configured provider, or to an error saying what to do."""

from __future__ import annotations

import pytest

from exai_mcp.errors import ConfigError, InputError
from exai_mcp.providers.catalog import KNOWN_MODELS, ModelCatalog
from exai_mcp.providers.registry import PROVIDERS, SPECS

BOTH = ModelCatalog({"kimi": "kimi-k2-0905-preview", "glm": "glm-4.6"})


def test_table_holds_the_models_users_ask_for() -> None:
    ids = {m.id for m in KNOWN_MODELS}
    assert {"kimi-k2-0905-preview", "kimi-k2-turbo-preview", "kimi-thinking-preview"} <= ids
    assert {"glm-4.6", "glm-4.5", "glm-4.5-air", "glm-4.5-flash"} <= ids


def test_alias_resolves_to_its_model() -> None:
    assert BOTH.resolve("kimi-k2").id == "kimi-k2-0905-preview"
    assert BOTH.resolve("GLM-4.5-Air").label == "glm:glm-4.5-air"


def test_provider_prefix_reaches_ids_not_in_the_table() -> None:
    model = BOTH.resolve("kimi:kimi-k3-preview")
    assert (model.provider, model.id) == ("kimi", "kimi-k3-preview")


def test_auto_prefers_an_available_provider() -> None:
    assert BOTH.resolve("auto").provider == "kimi"
    assert BOTH.resolve("auto", available=lambda p: p != "kimi").provider == "glm"


def test_default_model_setting_replaces_auto() -> None:
    catalog = ModelCatalog({"kimi": "kimi-k2-0905-preview", "glm": "glm-4.6"}, "glm-4.5")
    assert catalog.resolve("auto").id == "glm-4.5"


def test_unknown_model_lists_what_is_allowed() -> None:
    with pytest.raises(InputError, match="'kimi:<id>'"):
        BOTH.resolve("gpt-5")


def test_model_of_an_unconfigured_provider_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="GLM_API_KEY"):
        ModelCatalog({"kimi": "kimi-k2-0905-preview"}).resolve("glm-4.6")


def test_no_provider_at_all_says_which_variables_to_set() -> None:
    with pytest.raises(ConfigError, match=r"KIMI_API_KEY.*GLM_API_KEY"):
        ModelCatalog({}).resolve("auto")


def test_every_model_in_the_table_belongs_to_a_registered_provider() -> None:
    assert {m.provider for m in KNOWN_MODELS} == set(SPECS)


def test_each_provider_default_model_is_in_the_table() -> None:
    assert all(
        any(m.id == spec.model_default and m.provider == spec.name for m in KNOWN_MODELS)
        for spec in PROVIDERS
    )


def test_unknown_model_offers_every_registered_prefix() -> None:
    with pytest.raises(InputError) as info:
        BOTH.resolve("gpt-5")
    assert all(f"'{spec.name}:<id>'" in str(info.value) for spec in PROVIDERS)


def test_unconfigured_provider_error_names_all_its_key_variables() -> None:
    with pytest.raises(ConfigError, match=r"GLM_API_KEY \(or ZHIPUAI_API_KEY / ZAI_API_KEY\)"):
        ModelCatalog({"kimi": "kimi-k2-0905-preview"}).resolve("glm:glm-5")
