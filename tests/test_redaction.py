"""No eight consecutive characters of an API key survive redaction, however the text was cut.

`leaked_runs` is the check every secrecy test here and in the provider tests relies on.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_provider import FakeProvider

from exai_mcp.redact import MASK, MIN_RUN, RedactingFilter, Redactor, install_log_redaction
from tests.conftest import in_process_client, settings_for

KEY = "sk-Zq8vN3pX7tLw2RbK9mYc4HdJ6sFg1A"  # 32 characters, like a Moonshot key


def leaked_runs(text: str, secret: str = KEY, run: int = MIN_RUN) -> list[str]:
    """Every `run`-character piece of `secret` still present in `text` (empty when clean)."""
    return [
        secret[i : i + run] for i in range(len(secret) - run + 1) if secret[i : i + run] in text
    ]


def test_every_occurrence_of_the_key_becomes_the_mask() -> None:
    text = f"Authorization: Bearer {KEY}; again {KEY}."
    assert Redactor([KEY]).redact(text) == f"Authorization: Bearer {MASK}; again {MASK}."


def test_text_without_a_secret_is_returned_unchanged() -> None:
    text = "model not found: kimi-k2-0905-preview " * 20
    assert Redactor([KEY]).redact(text) == text
    assert Redactor([]).redact(text) == text


@pytest.mark.parametrize("limit", range(480, 521))
def test_a_key_straddling_the_cut_leaves_no_run_at_the_end(limit: int) -> None:
    text = "x" * 490 + f"Bearer {KEY}" + "y" * 100
    cut = Redactor([KEY]).redact(text, limit=limit)
    assert not leaked_runs(cut)
    assert len(cut) <= limit + 1


def test_a_prefix_of_the_key_at_the_end_of_a_text_cut_before_us_is_masked() -> None:
    for length in range(MIN_RUN, len(KEY)):
        assert Redactor([KEY]).redact("gateway echo: Bearer " + KEY[:length]).endswith(MASK)


def test_a_suffix_of_the_key_at_the_start_of_a_text_cut_from_the_front_is_masked() -> None:
    for start in range(1, len(KEY) - MIN_RUN + 1):
        assert Redactor([KEY]).redact(KEY[start:] + " was rejected").startswith(MASK)


def test_a_fragment_in_the_middle_is_masked_and_short_runs_are_left() -> None:
    redactor = Redactor([KEY])
    assert redactor.redact(f"key ...{KEY[5:20]}... rejected") == f"key ...{MASK}... rejected"
    harmless = KEY[: MIN_RUN - 1]  # seven characters say nothing useful about the key
    assert redactor.redact(f"prefix {harmless} only") == f"prefix {harmless} only"


def test_several_secrets_are_all_masked_and_a_too_short_one_garbles_nothing() -> None:
    other = "glm-" + "0123456789abcdef" * 2
    redacted = Redactor([KEY, other, "x", ""]).redact(f"{KEY} / {other} / an expert's text")
    assert redacted == f"{MASK} / {MASK} / an expert's text"


@pytest.fixture
def root_output() -> Iterator[io.StringIO]:
    """A real handler on the root logger, as the CLI configures it, writing to a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for other in root.handlers:  # pytest's own capture handlers got the filter too
            for f in [f for f in other.filters if isinstance(f, RedactingFilter)]:
                other.removeFilter(f)


def test_log_lines_from_any_logger_are_masked_including_arguments_and_tracebacks(
    root_output: io.StringIO,
) -> None:
    install_log_redaction([KEY])
    log = logging.getLogger("exai_mcp.providers.somewhere")
    log.info("calling with %s and %d retries", f"Bearer {KEY}", 3)
    log.warning("gateway echoed %r", {"authorization": f"Bearer {KEY[:20]}"})
    try:
        raise RuntimeError(f"upstream said: Bearer {KEY}")
    except RuntimeError:
        log.exception("request failed")
    output = root_output.getvalue()
    assert not leaked_runs(output)
    assert "calling with Bearer *** and 3 retries" in output
    assert "RuntimeError: upstream said: Bearer ***" in output  # the traceback is kept, masked


def test_installing_twice_replaces_the_filter(root_output: io.StringIO) -> None:
    install_log_redaction(["first-secret-value"])
    install_log_redaction([KEY])
    for handler in logging.getLogger().handlers:
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    logging.getLogger("exai_mcp").info("key %s", KEY)
    assert f"key {MASK}" in root_output.getvalue()


async def test_a_key_echoed_inside_an_answer_is_masked_before_it_is_stored_or_returned(
    fake: FakeProvider, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path, KIMI_API_KEY=KEY)
    glm_key = settings.provider("glm").api_key.get_secret_value()  # type: ignore[union-attr]
    fake.answer = f"Your config sends Bearer {KEY} and also {glm_key[:10]}; rotate them."
    async with in_process_client(settings) as client:
        first = await client.call_tool("analyze", {"text": "what does my config send?"})
        again = await client.call_tool("analyze", {"text": "what does my config send?"})
    assert again.structured_content["cached"] is True
    for result in (first, again):
        assert not result.is_error
        text = result.content[0].text + str(result.structured_content)
        assert "Bearer ***" in text
        assert not leaked_runs(text, KEY) and not leaked_runs(text, glm_key)
    stored = (tmp_path / "state.sqlite3").read_bytes()
    assert KEY[:MIN_RUN].encode() not in stored and glm_key[:MIN_RUN].encode() not in stored
