"""`analyze` as the assistant uses it: inputs, files, and what comes back."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from fake_provider import FakeProvider

from tests.conftest import in_process_client, settings_for
from tests.test_workflow import step


def user_message(fake: FakeProvider, index: int = -1) -> str:
    return fake.chat_requests[index].body["messages"][-1]["content"]


async def test_files_reach_the_model_with_line_numbers(fake: FakeProvider, tmp_path: Path) -> None:
    source = tmp_path / "calc.py"
    source.write_text("def add(a, b):\n    return a - b\n")
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        result = await client.call_tool(
            "analyze", {"text": "Find the bug", "files": [str(source)], "focus": "quality"}
        )
    assert not result.is_error
    sent = user_message(fake)
    assert "Find the bug" in sent
    assert "    2│     return a - b" in sent
    assert result.structured_content["files_included"] == [str(source)]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d / "missing.py", "does not exist"),
        (lambda d: (d / "blob.bin").write_bytes(b"\x00\x01\x02" * 10) and d / "blob.bin", "binary"),
        (lambda d: (d / "big.txt").write_text("x" * 2048) and d / "big.txt", "EXAI_MAX_FILE_BYTES"),
        (lambda d: Path("/etc/hostname"), "outside the allowed roots"),
        (lambda d: (d / ".env").write_text("A=1") and d / ".env", "secret location"),
    ],
    ids=["missing", "binary", "oversized", "outside-roots", "secret"],
)
async def test_a_bad_file_is_an_error_naming_the_file_and_the_reason(
    fake: FakeProvider, tmp_path: Path, make, reason: str
) -> None:
    path = make(tmp_path)
    settings = settings_for(fake, tmp_path, EXAI_MAX_FILE_BYTES=1024)
    async with in_process_client(settings) as client:
        result = await client.call_tool("analyze", {"text": "look", "files": [str(path)]})
    assert result.is_error
    assert str(path) in result.content[0].text and reason in result.content[0].text
    assert fake.chat_count == 0  # refused before any provider time is spent


async def test_a_bad_path_names_its_argument_and_place(fake: FakeProvider, tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text("x = 1\n")
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        empty = await client.call_tool("analyze", {"text": "look", "files": [str(good), ""]})
    assert empty.content[0].text.startswith("files[1]: (an empty path): must be an absolute path")


async def test_undecodable_bytes_never_crash_the_server(fake: FakeProvider, tmp_path: Path) -> None:
    latin = tmp_path / "legacy.txt"
    latin.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        result = await client.call_tool("analyze", {"files": [str(latin)]})
    assert not result.is_error
    assert "caf\ufffd" in user_message(fake)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "give 'text'"),
        ({"text": "x", "focus": "style"}, "focus: Input should be 'general'"),
        ({"text": "x", "temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"text": "x", "files": "a.py"}, "files: Input should be a valid list"),
        (
            {"text": "x", "verbose": True},
            "verbose: unknown field; allowed: text, files, focus, model, temperature, "
            "continuation_id",
        ),
        ({"txt": "x"}, "txt: unknown field; did you mean 'text'? allowed: text, files,"),
        ({"text": "x", "model": "kimi:k2\nFORGED"}, "model: must be 'auto', a model id or alias"),
        ({"text": "x", "model": "k" * 201}, "up to 200 characters"),
        (
            {"text": "x", "continuation_id": "c" * 500},
            "continuation_id: is 500 characters long; the ids this server gives out have 36 "
            f"(got '{'c' * 78}…)",
        ),
        ({"text": "x", "model": "gpt-5"}, "is not a known model"),
    ],
)
async def test_bad_arguments_name_the_field_and_what_is_allowed(
    fake: FakeProvider, tmp_path: Path, arguments: dict, expected: str
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        result = await client.call_tool("analyze", arguments)
    assert result.is_error
    assert expected in result.content[0].text
    assert fake.chat_count == 0


async def test_a_long_reply_is_cut_with_a_marker_never_silently(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.answer = "word " * 2000  # about 2,500 estimated tokens
    settings = settings_for(fake, tmp_path, EXAI_MAX_OUTPUT_TOKENS=500)
    async with in_process_client(settings) as client:
        result = await client.call_tool("analyze", {"text": "essay please"})
    data = result.structured_content
    assert data["truncated"] is True
    assert (
        "reply cut at about 500" in data["analysis"]
        and "EXAI_MAX_OUTPUT_TOKENS" in data["analysis"]
    )
    assert len(data["analysis"]) < 500 * 4 + 400


async def test_a_follow_up_on_the_continuation_id_sends_the_earlier_exchange(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        first = await client.call_tool("analyze", {"text": "Is SQLite fine for 3 writers?"})
        thread = first.structured_content["continuation_id"]
        second = await client.call_tool(
            "analyze", {"text": "And with WAL?", "continuation_id": thread}
        )
    assert second.structured_content["continuation_id"] == thread
    assert "Is SQLite fine for 3 writers?" in user_message(fake)
    assert "And with WAL?" in user_message(fake)


async def test_an_unknown_continuation_id_is_a_clear_error(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        result = await client.call_tool("analyze", {"text": "x", "continuation_id": "nope"})
    assert result.is_error and "'nope' is unknown" in result.content[0].text


async def test_a_follow_up_on_a_full_thread_is_refused_before_anything_is_paid(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path, EXAI_MAX_THREAD_TURNS=2)) as client:
        first = await client.call_tool("analyze", {"text": "one"})
        cid = first.structured_content["continuation_id"]
        await client.call_tool("analyze", {"text": "two", "continuation_id": cid})
        third = await client.call_tool("analyze", {"text": "three", "continuation_id": cid})
    assert third.is_error
    assert third.content[0].text.startswith(f"continuation_id '{cid}' is full")
    assert fake.chat_count == 2


async def test_an_answer_whose_thread_filled_up_meanwhile_still_arrives_in_a_new_thread(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path, EXAI_MAX_THREAD_TURNS=2)) as client:
        first = await client.call_tool("analyze", {"text": "one"})
        cid = first.structured_content["continuation_id"]
        fake.hold()
        results = []

        async def follow_up() -> None:
            args = {"text": "two", "continuation_id": cid}
            results.append(await client.call_tool("analyze", args))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_up)
            await fake.wait_for_requests(2)
            meanwhile = step(1, total=2, findings="the thread is now full", continuation_id=cid)
            assert not (await client.call_tool("workflow", meanwhile)).is_error
            fake.release()
    [answer] = results
    assert not answer.is_error, answer.content[0].text
    assert answer.structured_content["continuation_id"] != cid
    assert fake.chat_count == 2


async def test_an_empty_continuation_id_starts_a_new_thread_in_both_tools(
    fake: FakeProvider, tmp_path: Path
) -> None:
    """Form-based clients send "" for an optional field left empty."""
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        asked = await client.call_tool("analyze", {"text": "x", "continuation_id": ""})
        started = await client.call_tool("workflow", step(1, continuation_id=""))
    assert not asked.is_error and not started.is_error, started.content[0].text
    assert asked.structured_content["continuation_id"]
    assert started.structured_content["continuation_id"]


async def test_an_edited_file_is_analysed_again_not_served_from_the_cache(
    fake: FakeProvider, tmp_path: Path
) -> None:
    source = tmp_path / "calc.py"
    source.write_text("def add(a, b):\n    return a - b\n")
    arguments = {"text": "Find the bug", "files": [str(source)]}
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        await client.call_tool("analyze", arguments)
        unchanged = await client.call_tool("analyze", arguments)
        source.write_text("def add(a, b):\n    return a + b\n")
        edited = await client.call_tool("analyze", arguments)
    assert unchanged.structured_content["cached"] is True
    assert edited.structured_content["cached"] is False
    assert fake.chat_count == 2
    assert "return a + b" in user_message(fake)
