"""The `workflow` tool: steps recorded per thread, no provider call until the final step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import anyio
import jsonschema
import pytest
from fake_provider import FakeProvider, Reply
from mcp import Client

from exai_mcp.server import TOOLS, tool_definition
from exai_mcp.store.threads import Thread, ThreadStore
from exai_mcp.tools.workflow import Kind, WorkflowInput, parse_json_verdict
from exai_mcp.tools.workflow_kinds import KIND_NAMES, KINDS
from tests.conftest import in_process_client, settings_for


def step(number: int, total: int = 3, **fields: Any) -> dict[str, Any]:
    """Arguments of one debug step; `fields` override or add to them."""
    args: dict[str, Any] = {
        "kind": "debug",
        "step": f"step {number} of the investigation",
        "step_number": number,
        "total_steps": total,
        "next_step_required": number < total,
        "findings": f"findings of step {number}",
        "confidence": "medium",
    }
    args.update(fields)
    return args


async def call(client: Client, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool("workflow", args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def error(client: Client, args: dict[str, Any]) -> str:
    result = await client.call_tool("workflow", args)
    assert result.is_error
    return result.content[0].text


def stored(tmp_path: Path, thread_id: str) -> Thread:
    with ThreadStore(tmp_path / "state.sqlite3") as store:
        return store.get(thread_id)


def user_message(fake: FakeProvider, index: int) -> str:
    return fake.chat_requests[index].body["messages"][-1]["content"]


def system_message(fake: FakeProvider, index: int) -> str:
    return fake.chat_requests[index].body["messages"][0]["content"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- schema


def test_the_kind_argument_allows_exactly_the_nine_kinds() -> None:
    assert get_args(Kind) == KIND_NAMES


def test_tools_list_stays_under_ten_thousand_characters_of_compact_json() -> None:
    tools = [tool_definition(spec) for spec in TOOLS]
    dumped = json.dumps(
        [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools],
        separators=(",", ":"),
    )
    assert len(dumped) < 10_000, len(dumped)


def test_the_input_schema_is_flat_and_rejects_unknown_fields() -> None:
    schema = WorkflowInput.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {
        "kind",
        "step",
        "step_number",
        "total_steps",
        "next_step_required",
        "findings",
    }
    assert set(schema["$defs"]) == {"Issue"}  # only the items of issues_found are nested


async def test_an_unknown_field_is_an_error_naming_it(fake: FakeProvider, tmp_path: Path) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        text = await error(client, step(1, relevant_file="/x"))
    assert "relevant_file: unknown field; did you mean 'relevant_files'? allowed: kind," in text


async def test_a_step_number_no_thread_could_hold_is_refused(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        text = await error(client, step(1, total=10**30))
    assert "total_steps: Input should be less than or equal to 10000" in text


async def test_the_verdict_is_kept_on_its_step_when_a_late_step_is_inserted_before_it(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1, total=3)))["continuation_id"]
        fake.hold()  # the final step's expert call waits
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, client, step(3, total=3, continuation_id=cid))
            await fake.wait_for_requests(1)
            await call(client, step(2, total=3, continuation_id=cid))  # arrives late
            fake.release()
    steps = stored(tmp_path, cid).steps
    assert [s.payload["workflow_step"] for s in steps] == [1, 2, 3]
    assert "expert" in steps[2].payload and "expert" not in steps[1].payload


async def test_a_bad_path_names_the_list_it_came_from(fake: FakeProvider, tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text("x = 1\n")
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        text = await error(
            client, step(1, relevant_files=[str(good)], files_checked=[str(good), "a.py"])
        )
    assert text.startswith("files_checked[1]: a.py: must be an absolute path")


async def test_a_missing_field_and_a_misspelt_nested_one_are_named(
    fake: FakeProvider, tmp_path: Path
) -> None:
    arguments = step(1, issues_found=[{"sevrity": "high", "description": "d"}])
    del arguments["findings"]
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        text = await error(client, arguments)
    assert text.splitlines()[1:] == [
        "- findings: missing; it is required",
        "- issues_found.0.severity: missing; it is required",
        "- issues_found.0.sevrity: unknown field; did you mean 'severity'? allowed: severity, "
        "description, location",
    ]


# --------------------------------------------------------------------------- steps


async def test_an_intermediate_step_makes_no_provider_request_and_returns_a_checklist(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        out = await call(client, step(1, confidence="exploring"))

    assert fake.chat_count == 0
    assert out["status"] == "pause_for_debug"
    assert out["continuation_id"]
    assert out["required_actions"] == KINDS["debug"].required_actions(1, "exploring")
    assert "step_number=2" in out["next_steps"]
    assert out["expert_analysis"] is None
    assert out["thread"]["steps"] == 1


async def test_the_thread_summary_counts_files_and_issues_by_severity(
    fake: FakeProvider, tmp_path: Path
) -> None:
    a = write(tmp_path / "a.py", "a = 1\n")
    b = write(tmp_path / "b.py", "b = 2\n")
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        first = await call(
            client,
            step(
                1,
                relevant_files=[str(a)],
                files_checked=[str(a), str(b)],
                issues_found=[{"severity": "high", "description": "a leaks", "location": "a.py:1"}],
            ),
        )
        second = await call(
            client,
            step(
                2,
                continuation_id=first["continuation_id"],
                relevant_files=[str(a), str(b)],
                issues_found=[
                    {"severity": "high", "description": "a leaks", "location": "a.py:1"},
                    {"severity": "low", "description": "b is unclear"},
                ],
                confidence="high",
            ),
        )

    assert second["thread"] == {
        "steps": 2,
        "relevant_files": 2,
        "files_checked": 2,
        "issues": {"critical": 0, "high": 1, "medium": 0, "low": 1},
        "confidence": "high",
    }
    assert second["required_actions"] == list(KINDS["debug"].verify_actions)


async def test_a_resent_step_is_stored_once(fake: FakeProvider, tmp_path: Path) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1)))["continuation_id"]
        await call(client, step(2, continuation_id=cid))
        again = await call(client, step(2, continuation_id=cid))

    thread = stored(tmp_path, cid)
    assert [s.number for s in thread.steps] == [1, 2]
    assert again["thread"]["steps"] == 2


async def test_a_resent_earlier_step_keeps_the_steps_after_it(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1, total=4)))["continuation_id"]
        await call(client, step(2, total=4, continuation_id=cid))
        await call(client, step(3, total=4, continuation_id=cid))
        await call(client, step(2, total=4, continuation_id=cid))  # a late retry of step 2

    assert [s.payload["workflow_step"] for s in stored(tmp_path, cid).steps] == [1, 2, 3]


async def test_a_step_arriving_after_a_later_one_is_inserted_before_it(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1, total=4)))["continuation_id"]
        await call(client, step(3, total=4, continuation_id=cid))
        await call(client, step(2, total=4, continuation_id=cid))

    thread = stored(tmp_path, cid)
    assert [s.payload["workflow_step"] for s in thread.steps] == [1, 2, 3]
    assert [s.number for s in thread.steps] == [1, 2, 3]


async def test_backtracking_drops_the_later_steps(fake: FakeProvider, tmp_path: Path) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1, total=4)))["continuation_id"]
        await call(client, step(2, total=4, continuation_id=cid, findings="wrong track"))
        await call(client, step(3, total=4, continuation_id=cid, findings="deeper wrong track"))
        await call(client, step(2, total=4, continuation_id=cid, findings="right track"))
        thread = stored(tmp_path, cid)
        await call(client, step(3, total=3, continuation_id=cid, findings="root cause found"))

    assert [s.number for s in thread.steps] == [1, 2]
    assert thread.steps[1].payload["findings"] == "right track"
    prompt = user_message(fake, 0)
    assert "right track" in prompt and "root cause found" in prompt
    assert "wrong track" not in prompt


async def test_step_one_after_a_finished_workflow_starts_a_new_one_on_the_same_thread(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1, total=1, findings="FIRST-RUN")))["continuation_id"]
        second = await call(
            client, step(1, total=1, kind="codereview", continuation_id=cid, findings="REVIEW")
        )

    assert second["continuation_id"] == cid
    assert [(s.number, s.payload["kind"]) for s in stored(tmp_path, cid).steps] == [
        (1, "debug"),
        (2, "codereview"),
    ]
    prompt = user_message(fake, 1)
    assert "FIRST-RUN" in prompt and "REVIEW" in prompt


async def test_an_unknown_continuation_id_is_a_clear_error(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        text = await error(client, step(2, continuation_id="no-such-thread"))
    assert "continuation_id 'no-such-thread' is unknown" in text


async def test_a_later_step_without_continuation_id_is_an_error_not_a_new_thread(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        text = await error(client, step(2))
    assert "needs the continuation_id returned by step 1" in text


async def test_a_step_of_another_kind_on_a_running_workflow_is_an_error(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1)))["continuation_id"]
        text = await error(client, step(2, kind="secaudit", continuation_id=cid))
    assert "holds a debug workflow" in text and "kind='debug'" in text


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        ("outside", "outside the allowed roots"),
        ("secret", "secret location (.env)"),
        ("binary", "binary file"),
        ("relative", "must be an absolute path"),
    ],
)
async def test_a_bad_path_is_an_error_at_the_step_that_names_it(
    fake: FakeProvider,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    make: str,
    rule: str,
) -> None:
    paths = {
        "outside": write(tmp_path_factory.mktemp("elsewhere") / "x.py", "x = 1\n"),
        "secret": write(tmp_path / "app" / ".env", "TOKEN=hunter2\n"),
        "relative": Path("src/x.py"),
    }
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    paths["binary"] = binary
    bad = str(paths[make])
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1)))["continuation_id"]
        as_relevant = await error(client, step(2, continuation_id=cid, relevant_files=[bad]))
        as_checked = await error(client, step(2, continuation_id=cid, files_checked=[bad]))

    for text in (as_relevant, as_checked):
        assert bad in text and rule in text
    assert [s.number for s in stored(tmp_path, cid).steps] == [1]  # the bad step is not kept


async def test_files_over_the_budget_are_listed_as_left_out_in_the_prompt_and_the_output(
    fake: FakeProvider, tmp_path: Path
) -> None:
    small = write(tmp_path / "small.py", "def handler():\n    return 'SMALL-FILE-BODY'\n")
    # kimi-k2-0711-preview has a 131,072-token window: this file (~125k tokens) cannot fit.
    big = write(tmp_path / "big.py", "x = 'padding padding padding padding padding'\n" * 11_000)
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        out = await call(
            client,
            step(
                1,
                total=1,
                model="kimi-k2-0711-preview",
                relevant_files=[str(big), str(small)],
            ),
        )

    prompt = user_message(fake, 0)
    assert "SMALL-FILE-BODY" in prompt and "padding padding" not in prompt
    assert "NOT included" in prompt and f"- {big}: over the token budget" in prompt
    assert out["files_included"] == [str(small)]
    assert len(out["files_left_out"]) == 1
    assert out["files_left_out"][0].startswith(f"{big}: over the token budget")
    assert out["relevant_files"] == [str(big), str(small)]


# --------------------------------------------------------------------------- the verdict


async def test_a_codereview_workflow_runs_end_to_end_and_parses_the_json_verdict(
    fake: FakeProvider, tmp_path: Path
) -> None:
    code = write(tmp_path / "svc" / "orders.py", "def total(items):\n    return sum(items) + 1\n")
    fake.enqueue(
        Reply(
            text='Here is my review.\n```json\n{"summary": "off by one", "overall_verdict": '
            '"request_changes", "issues": []}\n```'
        )
    )
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        first = await call(
            client,
            step(
                1,
                total=2,
                kind="codereview",
                step="Map the order service",
                findings="orders.total is the only entry point",
                relevant_files=[str(code)],
            ),
        )
        assert first["status"] == "pause_for_codereview"
        final = await call(
            client,
            step(
                2,
                total=2,
                kind="codereview",
                continuation_id=first["continuation_id"],
                findings="total() adds 1 to every sum",
                issues_found=[
                    {"severity": "high", "description": "off by one", "location": "orders.py:2"}
                ],
                confidence="high",
            ),
        )

    assert fake.chat_count == 1
    assert system_message(fake, 0) == KINDS["codereview"].system_prompt
    prompt = user_message(fake, 0)
    assert "orders.total is the only entry point" in prompt
    assert "total() adds 1 to every sum" in prompt
    assert "    2│     return sum(items) + 1" in prompt  # embedded with line numbers
    assert final["status"] == "complete"
    assert final["expert_used"] is True
    analysis = final["expert_analysis"]
    assert analysis["json"] == {
        "summary": "off by one",
        "overall_verdict": "request_changes",
        "issues": [],
    }
    assert analysis["provider"] == "kimi" and analysis["usage"]["prompt_tokens"] > 0
    assert final["issues"] == ["[high] off by one (orders.py:2)"]
    assert final["relevant_files"] == [str(code)]
    assert final["files_included"] == [str(code)]


async def test_the_verdict_is_stored_on_the_final_step(fake: FakeProvider, tmp_path: Path) -> None:
    fake.enqueue(Reply(text="VERDICT: the cache is never invalidated"))
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        out = await call(client, step(1, total=1))

    payload = stored(tmp_path, out["continuation_id"]).steps[-1].payload
    assert payload["expert"]["text"] == "VERDICT: the cache is never invalidated"
    assert "VERDICT: the cache is never invalidated" in payload["digest"]


async def test_a_retried_final_step_is_served_from_the_cache(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1, total=2)))["continuation_id"]
        first = await call(client, step(2, total=2, continuation_id=cid))
        retry = await call(client, step(2, total=2, continuation_id=cid))

    assert fake.chat_count == 1
    assert first["cached"] is False and retry["cached"] is True
    assert retry["expert_analysis"] == first["expert_analysis"]
    assert "expert" in stored(tmp_path, cid).steps[-1].payload  # the retry kept the verdict


async def test_a_final_step_after_a_relevant_file_was_edited_asks_the_expert_again(
    fake: FakeProvider, tmp_path: Path
) -> None:
    source = write(tmp_path / "app.py", "x = 1\n")
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1, total=2, relevant_files=[str(source)])))[
            "continuation_id"
        ]
        await call(client, step(2, total=2, continuation_id=cid))
        source.write_text("x = 2\n")
        after_edit = await call(client, step(2, total=2, continuation_id=cid))

    assert after_edit["cached"] is False
    assert fake.chat_count == 2
    assert "x = 2" in user_message(fake, 1)


async def test_a_retried_one_step_workflow_is_served_from_the_cache(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        first = await call(client, step(1, total=1))
        retry = await call(client, step(1, total=1))

    assert fake.chat_count == 1
    assert retry["cached"] is True
    # The answer is shared; the thread is not: each caller continues a thread of its own.
    assert retry["continuation_id"] != first["continuation_id"]
    assert retry["expert_analysis"] == first["expert_analysis"]


async def test_a_final_step_sent_twice_at_once_makes_one_provider_request(
    fake: FakeProvider, tmp_path: Path
) -> None:
    results: list[dict[str, Any]] = []
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1, total=2)))["continuation_id"]
        final = step(2, total=2, continuation_id=cid)
        fake.hold()

        async def send() -> None:
            results.append(await call(client, final))

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            tg.start_soon(send)
            await fake.wait_for_requests(1)
            fake.release()

    assert fake.chat_count == 1
    assert results[0]["expert_analysis"]["text"] == results[1]["expert_analysis"]["text"]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"use_expert": False}, "use_expert is false"), ({"confidence": "certain"}, "certain")],
)
async def test_the_final_step_completes_locally_without_the_expert_when_asked(
    fake: FakeProvider, tmp_path: Path, fields: dict[str, Any], reason: str
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1, total=2)))["continuation_id"]
        result = await client.call_tool("workflow", step(2, total=2, continuation_id=cid, **fields))

    assert fake.chat_count == 0
    out = result.structured_content
    assert out["status"] == "complete" and out["expert_used"] is False
    assert out["expert_analysis"] is None
    assert reason in out["expert_note"] and "without a provider call" in out["expert_note"]
    assert "No expert analysis" in result.content[0].text


async def test_two_concurrent_workflows_each_send_only_their_own_findings(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        debug = await call(client, step(1, total=2, kind="debug", findings="DEBUG-ONE"))
        audit = await call(client, step(1, total=2, kind="secaudit", findings="AUDIT-ONE"))
        fake.hold()
        async with anyio.create_task_group() as tg:
            for kind, cid, finding in (
                ("debug", debug["continuation_id"], "DEBUG-TWO"),
                ("secaudit", audit["continuation_id"], "AUDIT-TWO"),
            ):
                args = step(2, total=2, kind=kind, continuation_id=cid, findings=finding)
                tg.start_soon(call, client, args)
            await fake.wait_for_active(2)  # both verdicts are being asked for at once
            fake.release()

    prompts = {system_message(fake, i): user_message(fake, i) for i in range(2)}
    debug_prompt = prompts[KINDS["debug"].system_prompt]
    audit_prompt = prompts[KINDS["secaudit"].system_prompt]
    assert "DEBUG-ONE" in debug_prompt and "DEBUG-TWO" in debug_prompt
    assert "AUDIT" not in debug_prompt
    assert "AUDIT-ONE" in audit_prompt and "AUDIT-TWO" in audit_prompt
    assert "DEBUG" not in audit_prompt


# --------------------------------------------------------------------------- cross-tool


async def test_analyze_continuing_a_workflow_sends_its_findings_and_verdict(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(text="VERDICT-XYZ: the lock is taken twice"))
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        cid = (await call(client, step(1, total=2, findings="FINDING-ONE")))["continuation_id"]
        await call(client, step(2, total=2, continuation_id=cid, findings="FINDING-TWO"))
        follow_up = await client.call_tool(
            "analyze", {"text": "How do I fix it?", "continuation_id": cid}
        )

    assert not follow_up.is_error
    prompt = user_message(fake, 1)
    assert "FINDING-ONE" in prompt and "FINDING-TWO" in prompt
    assert "VERDICT-XYZ: the lock is taken twice" in prompt
    assert follow_up.structured_content["continuation_id"] == cid


async def test_a_workflow_continuing_an_analyze_thread_sees_the_exchange(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(text="ANSWER-ABC: look at the retry loop"))
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        first = await client.call_tool("analyze", {"text": "QUESTION-ABC: why the hang?"})
        cid = first.structured_content["continuation_id"]
        out = await call(client, step(1, total=1, continuation_id=cid, findings="WF-FINDING"))

    prompt = user_message(fake, 1)
    assert "QUESTION-ABC: why the hang?" in prompt
    assert "ANSWER-ABC: look at the retry loop" in prompt
    assert "WF-FINDING" in prompt
    assert out["continuation_id"] == cid
    steps = stored(tmp_path, cid).steps
    assert [(s.number, s.tool) for s in steps] == [(1, "analyze"), (2, "workflow")]


async def test_a_workflow_on_an_analyze_thread_starts_at_step_1_so_retries_stay_free(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        first = await client.call_tool("analyze", {"text": "why the hang?"})
        cid = first.structured_content["continuation_id"]
        text = await error(client, step(2, total=2, continuation_id=cid))
    assert text.startswith(f"continuation_id '{cid}' holds no workflow investigation yet")
    assert "step_number=1" in text
    assert fake.chat_count == 1
    assert [s.tool for s in stored(tmp_path, cid).steps] == ["analyze"]


# --------------------------------------------------------------------------- output


async def test_every_reply_matches_the_output_schema(fake: FakeProvider, tmp_path: Path) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        schema = next(t for t in (await client.list_tools()).tools if t.name == "workflow")
        cid = (await call(client, step(1, total=2)))["continuation_id"]
        replies = [
            await call(client, step(2, total=3, continuation_id=cid)),
            await call(client, step(3, total=3, continuation_id=cid, use_expert=False)),
            await call(client, step(3, total=3, continuation_id=cid)),
        ]
    for reply in replies:
        jsonschema.validate(reply, schema.output_schema)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"summary": "s"}', {"summary": "s"}),
        ('Verdict:\n```json\n{"summary": "fenced"}\n```\nThanks.', {"summary": "fenced"}),
        ('Sure. {"summary": "inline"} Done.', {"summary": "inline"}),
        ("No JSON here.", None),
        ("[1, 2]", None),
    ],
)
def test_the_json_verdict_is_parsed_when_the_expert_answered_in_json(
    text: str, expected: dict[str, Any] | None
) -> None:
    assert parse_json_verdict(text) == expected


def test_a_store_busy_with_another_process_does_not_lose_the_verdict_reply() -> None:
    from types import SimpleNamespace

    from exai_mcp.errors import BusyError
    from exai_mcp.tools.workflow import _attach_verdict

    class LockedStore:
        def edit(self, *_args: object) -> None:
            raise BusyError("the thread store is busy with another process; retry the call")

    # Logged, not raised: the expert's answer still reaches the client.
    _attach_verdict(SimpleNamespace(store=LockedStore()), "tid", 1, {})  # type: ignore[arg-type]
