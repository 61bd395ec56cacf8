"""Settings come from the environment and an optional .env file, validated in one place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exai_mcp.config import Settings, load_settings, problem_with_key
from exai_mcp.errors import ConfigError
from exai_mcp.providers.registry import PROVIDERS


def test_dotenv_file_is_read_and_real_variables_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("GLM_API_KEY=from-file\nEXAI_MAX_INFLIGHT=7\n")
    monkeypatch.setenv("EXAI_MAX_INFLIGHT", "9")
    settings = load_settings()
    assert settings.glm_api_key is not None
    assert settings.glm_api_key.get_secret_value() == "from-file"
    assert settings.max_inflight == 9


@pytest.mark.parametrize("variable", ["KIMI_API_KEY", "MOONSHOT_API_KEY"])
def test_an_empty_variable_turns_off_what_the_env_file_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """The README's way to turn a provider off: `KIMI_API_KEY=""` in the client's env."""
    (tmp_path / ".env").write_text("KIMI_API_KEY=from-file\n")
    monkeypatch.setenv(variable, "")
    assert load_settings().kimi_api_key is None


def test_exai_env_file_names_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "prod.env"
    other.write_text("KIMI_DEFAULT_MODEL=kimi-k2-turbo-preview\n")
    monkeypatch.setenv("EXAI_ENV_FILE", str(other))
    assert load_settings().kimi_default_model == "kimi-k2-turbo-preview"


def test_exai_env_file_is_read_in_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "prod.env"
    other.write_text("KIMI_DEFAULT_MODEL=kimi-k2-turbo-preview\n")
    monkeypatch.setenv("exai_env_file", str(other))
    assert load_settings().kimi_default_model == "kimi-k2-turbo-preview"


def test_missing_named_env_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_ENV_FILE", "/nonexistent/exai.env")
    with pytest.raises(ConfigError, match=r"EXAI_ENV_FILE=/nonexistent/exai\.env"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("KIMI_API_KEY", "kimi_api_key"),
        ("MOONSHOT_API_KEY", "kimi_api_key"),
        ("GLM_API_KEY", "glm_api_key"),
        ("ZHIPUAI_API_KEY", "glm_api_key"),
        ("ZAI_API_KEY", "glm_api_key"),
    ],
)
def test_each_documented_key_variable_configures_its_provider(
    monkeypatch: pytest.MonkeyPatch, variable: str, field: str
) -> None:
    monkeypatch.setenv(variable, "k")
    assert getattr(load_settings(), field).get_secret_value() == "k"


@pytest.mark.parametrize(
    ("variable", "provider"), [(v, spec.name) for spec in PROVIDERS for v in spec.key_variables]
)
def test_provider_settings_name_the_key_variable_that_was_set(
    monkeypatch: pytest.MonkeyPatch, variable: str, provider: str
) -> None:
    monkeypatch.setenv(variable, "k")
    configured = load_settings().provider(provider)
    assert configured.configured and configured.key_variable == variable
    assert configured.api_key is not None and configured.api_key.get_secret_value() == "k"


def test_key_variable_from_the_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MOONSHOT_API_KEY=from-file\n")
    assert load_settings().provider("kimi").key_variable == "MOONSHOT_API_KEY"


@pytest.mark.parametrize(
    ("in_environment", "in_file"),
    [("MOONSHOT_API_KEY", "KIMI_API_KEY"), ("KIMI_API_KEY", "MOONSHOT_API_KEY")],
)
def test_key_and_its_variable_come_from_the_environment_before_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_environment: str, in_file: str
) -> None:
    (tmp_path / ".env").write_text(f"{in_file}=from-file\n")
    monkeypatch.setenv(in_environment, "from-environment")
    kimi = load_settings().provider("kimi")
    assert kimi.api_key is not None and kimi.api_key.get_secret_value() == "from-environment"
    assert kimi.key_variable == in_environment


def test_first_key_variable_wins_when_several_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZAI_API_KEY", "zai")
    monkeypatch.setenv("ZHIPUAI_API_KEY", "zhipuai")
    glm = load_settings().provider("glm")
    assert glm.api_key is not None and glm.api_key.get_secret_value() == "zhipuai"
    assert glm.key_variable == "ZHIPUAI_API_KEY"


def test_unconfigured_provider_names_its_documented_key_variable() -> None:
    settings = load_settings()
    for spec in PROVIDERS:
        provider = settings.provider(spec.name)
        assert not provider.configured and provider.api_key is None
        assert provider.key_variable == spec.key_variables[0]
    assert settings.configured_providers() == ()


def test_provider_settings_default_to_the_registry_and_read_its_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings()
    for spec in PROVIDERS:
        provider = defaults.provider(spec.name)
        assert provider.spec is spec
        assert provider.base_url == spec.base_url_default
        assert provider.default_model == spec.model_default
        assert provider.max_inflight == spec.max_inflight_default
    for spec in PROVIDERS:
        monkeypatch.setenv(spec.base_url_variable, f"http://127.0.0.1:9/{spec.name}")
        monkeypatch.setenv(spec.model_variable, f"{spec.name}-model")
        monkeypatch.setenv(spec.max_inflight_variable, "3")
        monkeypatch.setenv(spec.timeout_variable, "7")
    settings = load_settings()
    for spec in PROVIDERS:
        provider = settings.provider(spec.name)
        assert provider.base_url == f"http://127.0.0.1:9/{spec.name}"
        assert provider.default_model == f"{spec.name}-model"
        assert provider.max_inflight == 3
        assert settings.timeouts().attempt[spec.name] == 7


def test_configured_providers_come_in_registry_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLM_API_KEY", "g")
    monkeypatch.setenv("KIMI_API_KEY", "k")
    names = [p.spec.name for p in load_settings().configured_providers()]
    assert names == [spec.name for spec in PROVIDERS] == ["kimi", "glm"]


def test_unknown_provider_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        load_settings().provider("gpt")


def test_a_stray_key_origins_variable_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_ORIGINS", "not json")
    monkeypatch.setenv("MOONSHOT_API_KEY", "k")
    assert load_settings().provider("kimi").key_variable == "MOONSHOT_API_KEY"


def test_empty_key_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIMI_API_KEY", "")
    assert load_settings().kimi_api_key is None


def test_a_bad_value_names_the_variable_and_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_MAX_INFLIGHT", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "EXAI_MAX_INFLIGHT='0'" in str(info.value)
    assert "greater than or equal to 1" in str(info.value)


@pytest.mark.parametrize("value", ["verbose", "trace", "5"])
def test_unknown_log_level_names_the_variable_and_the_allowed_levels(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("EXAI_LOG_LEVEL", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"EXAI_LOG_LEVEL={value!r}" in str(info.value)
    assert "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in str(info.value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("notaurl", "must be an http:// or https:// URL with a host, like https://api.z.ai"),
        ("127.0.0.1:8080/v1", "must be an http:// or https:// URL with a host"),
        ("ftp://gateway/v1", "must be an http:// or https:// URL with a host"),
        ("http://gateway:port/v1", "has an invalid port"),
    ],
)
def test_a_provider_url_that_is_no_http_url_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("GLM_BASE_URL", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"GLM_BASE_URL={value!r}: {problem}" in str(info.value)


def test_credentials_in_a_provider_url_are_refused_and_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx would send them as Basic auth in place of the bearer key, and status, errors and
    logs would show the password."""
    monkeypatch.setenv("KIMI_BASE_URL", "https://gwuser:GWPASSWORD123@gateway.example/v1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "KIMI_BASE_URL='https://***@gateway.example/v1': must not hold a user name" in str(
        info.value
    )
    assert "GWPASSWORD123" not in str(info.value) and "gwuser" not in str(info.value)


def test_a_blank_http_token_is_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blank token must not count as set: that would allow a public bind nobody can use."""
    monkeypatch.setenv("EXAI_HTTP_TOKEN", "  \n")
    assert load_settings().http_token is None


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_LOG_LEVEL", " warning")
    assert load_settings().log_level == "WARNING"


def test_global_limit_default_is_below_the_sum_of_the_provider_limits() -> None:
    # Otherwise it never limits anything: each call also holds its provider's permit.
    settings = load_settings()
    assert settings.max_inflight == 8
    assert settings.max_inflight < sum(spec.max_inflight_default for spec in PROVIDERS)
    description = Settings.model_fields["max_inflight"].description or ""
    assert "across all providers" in description


@pytest.mark.parametrize(
    "key",
    [
        "your-kimi-api-key",
        "your-glm-api-key",
        "YOUR_API_KEY_HERE",
        "<your key>",
        "<KIMI_API_KEY>",
        "xxxxxxxxxxxx",
        "XXX-XXX",
        "changeme",
        "change-me",
        "sk-xxxxxxxxxxxxxxxx",
        "   ",
        "sk-abc def",
        "sk-abc123\n",
    ],
)
def test_keys_that_cannot_be_real_are_recognised(key: str) -> None:
    assert problem_with_key(key)


@pytest.mark.parametrize(
    "key", ["sk-3f9a8b7c6d5e4f", "0123abcd.efgh4567", "sk-x1y2z3", "kimi-test-key-123"]
)
def test_keys_that_look_real_are_not_flagged(key: str) -> None:
    assert problem_with_key(key) is None


def test_placeholder_key_is_a_warning_naming_the_variable_not_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", "your-kimi-api-key")
    monkeypatch.setenv("GLM_API_KEY", "sk-real 123")
    warnings = load_settings().warnings()
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("MOONSHOT_API_KEY holds a placeholder")
    assert warnings[1].startswith("GLM_API_KEY contains whitespace")
    assert not any("sk-real" in w or "your-kimi-api-key" in w for w in warnings)


def test_allowed_root_that_is_no_directory_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    missing = tmp_path / "gone"
    monkeypatch.setenv("EXAI_ALLOWED_ROOTS", os.pathsep.join(map(str, (tmp_path, a_file, missing))))
    settings = load_settings()
    assert settings.missing_roots() == (str(a_file), str(missing))
    assert settings.warnings() == [
        f"EXAI_ALLOWED_ROOTS names {a_file}, which is not a directory: no file can be read there",
        f"EXAI_ALLOWED_ROOTS names {missing}, which does not exist: no file can be read there",
    ]


def test_keys_are_never_shown_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIMI_API_KEY", "sk-top-secret")
    assert "sk-top-secret" not in repr(load_settings())


def test_allowed_roots_are_split_like_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EXAI_ALLOWED_ROOTS", f"{tmp_path}{os.pathsep}/srv/code")
    settings = load_settings()
    assert settings.allowed_roots == (str(tmp_path), "/srv/code")


def test_default_roots_are_home_and_working_directory(tmp_path: Path) -> None:
    roots = load_settings().effective_roots()
    assert Path.home().resolve() in roots and tmp_path.resolve() in roots


def test_a_filesystem_root_as_working_directory_is_not_a_default_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir("/")  # where GUI clients often start their servers
    assert load_settings().effective_roots() == (Path.home().resolve(),)


def test_variable_names_match_in_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("exai_max_attempts=4\n")
    monkeypatch.setenv("Exai_Max_Inflight", "5")
    settings = load_settings()
    assert (settings.max_attempts, settings.max_inflight) == (4, 5)


def test_an_unreadable_env_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"KIMI_API_KEY=\xff\xfe not utf-8\n")
    with pytest.raises(ConfigError, match=r"the \.env file \.env cannot be read"):
        load_settings()
