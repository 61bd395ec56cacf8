"""Settings come from the environment and an optional .env file, validated in one place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exai_mcp.config import load_settings
from exai_mcp.errors import ConfigError


def test_dotenv_file_is_read_and_real_variables_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("GLM_API_KEY=from-file\nEXAI_MAX_INFLIGHT=7\n")
    monkeypatch.setenv("EXAI_MAX_INFLIGHT", "9")
    settings = load_settings()
    assert settings.glm_api_key is not None
    assert settings.glm_api_key.get_secret_value() == "from-file"
    assert settings.max_inflight == 9


def test_exai_env_file_names_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "prod.env"
    other.write_text("KIMI_DEFAULT_MODEL=kimi-k2-turbo-preview\n")
    monkeypatch.setenv("EXAI_ENV_FILE", str(other))
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


def test_empty_key_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIMI_API_KEY", "")
    assert load_settings().kimi_api_key is None


def test_a_bad_value_names_the_variable_and_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_MAX_INFLIGHT", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "EXAI_MAX_INFLIGHT='0'" in str(info.value)
    assert "greater than or equal to 1" in str(info.value)


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
