"""The default roots never open the whole disk: a home or working directory of `/` is no root."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fake_provider import FakeProvider

from exai_mcp.config import load_settings
from tests.conftest import in_process_client, settings_for


@pytest.fixture
def home_and_cwd_are_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    """As under `docker run --user N` with no passwd entry, started from `/`."""
    monkeypatch.setenv("HOME", "/")
    monkeypatch.chdir("/")


def test_a_home_of_slash_is_not_a_default_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", "/")
    assert load_settings().effective_roots() == (tmp_path.resolve(),)


@pytest.mark.usefixtures("home_and_cwd_are_slash")
def test_home_and_working_directory_of_slash_leave_no_default_root() -> None:
    assert load_settings().effective_roots() == ()


def test_an_unknown_home_is_not_a_default_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert load_settings().effective_roots() == (tmp_path.resolve(),)


@pytest.mark.usefixtures("home_and_cwd_are_slash")
def test_slash_named_in_allowed_roots_is_taken_as_meant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAI_ALLOWED_ROOTS", "/")
    assert load_settings().effective_roots() == (Path("/"),)


@pytest.mark.usefixtures("home_and_cwd_are_slash")
async def test_with_no_root_left_files_are_refused_naming_the_variable_and_nothing_is_sent(
    fake: FakeProvider, tmp_path: Path
) -> None:
    marker = f"READABLE-{uuid.uuid4().hex}"
    readable = tmp_path / "hostname"
    readable.write_text(f"{marker}\n", encoding="utf-8")
    settings = settings_for(fake, tmp_path, EXAI_ALLOWED_ROOTS="")  # unset: the defaults
    async with in_process_client(settings) as client:
        refused = await client.call_tool("analyze", {"text": "look", "files": [str(readable)]})
        assert refused.is_error
        message = refused.content[0].text
        assert str(readable) in message and "EXAI_ALLOWED_ROOTS" in message
        assert "no directory is allowed for file access" in message
        assert fake.chat_count == 0

        answered = await client.call_tool("analyze", {"text": "no files, just a question"})
    assert not answered.is_error, answered.content
    assert fake.chat_count == 1
    assert all(marker not in str(request.body) for request in fake.chat_requests)


def test_no_safe_default_root_is_a_start_up_warning(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from exai_mcp.config import Settings

    monkeypatch.setenv("HOME", "/")
    monkeypatch.chdir("/")
    warnings = Settings().warnings()
    assert any(
        "no directory is allowed for file access" in w and "EXAI_ALLOWED_ROOTS" in w
        for w in warnings
    )
