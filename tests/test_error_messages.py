"""Every pipeline error opens with its cause and provider:model, then says what was tried, then
which setting to change; the API key never appears. Over stdio, against the fake provider.

The first clause is the text before the first "; ": it must name the failure and the model.
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest
from fake_provider import FakeProvider, Reply
from mcp import Client

from exai_mcp.errors import DeadlineExceeded, StreamCut
from exai_mcp.middleware.deadline import SERVER_DEADLINE_SETTING, Deadline
from exai_mcp.providers.base import ChatRequest
from exai_mcp.providers.kimi import create_kimi
from tests.conftest import in_process_client, provider_env, read_status, settings_for, stdio_params

KIMI = "kimi:kimi-k2-0905-preview"
KEYS = ("kimi-test-key-123", "glm-test-key-456")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(text: str, opening: str, *settings: str) -> None:
    """The message opens with `opening` and names every setting after its first clause."""
    first, _, rest = text.partition("; ")
    assert first.startswith(opening), text
    for setting in settings:
        assert setting in rest, (setting, text)
    assert not any(key in text for key in KEYS), text


CASES = [
    # (replies, opening, settings named after the first clause)
    ([Reply(hang=True)], f"{KIMI} timed out: no answer within 2.0 s (KIMI_TIMEOUT_SECS)",
     ("1 attempt, no time left in the 3 s budget (WORKFLOW_TOOL_TIMEOUT_SECS) for another",
      "raise KIMI_TIMEOUT_SECS")),
    ([Reply(status=429, retry_after=0)] * 2, f"{KIMI} is rate limited (HTTP 429",
     ("2 attempts (EXAI_MAX_ATTEMPTS=2)", "EXAI_KIMI_MAX_INFLIGHT")),
    ([Reply(status=503, error_message="overloaded")] * 2,
     f"{KIMI} failed on the provider's side (HTTP 503: overloaded)",
     ("2 attempts (EXAI_MAX_ATTEMPTS=2)",)),
    ([Reply(malformed=True)] * 2,
     f"{KIMI} returned a malformed response (not JSON: ",
     ("2 attempts (EXAI_MAX_ATTEMPTS=2)", "KIMI_BASE_URL")),
    ([Reply(cut_after=2)] * 2, f"{KIMI} cut its answer short: the stream stopped after 2 tokens",
     ("2 attempts (EXAI_MAX_ATTEMPTS=2)", "KIMI_BASE_URL")),
    ([Reply(status=401)], f"{KIMI} rejected the API key in KIMI_API_KEY (HTTP 401",
     ("not retried", "KIMI_API_KEY")),
]  # fmt: skip


async def test_each_provider_failure_opens_with_its_cause_and_names_the_setting(
    fake: FakeProvider, tmp_path: Path
) -> None:
    env = provider_env(
        fake,
        tmp_path,
        WORKFLOW_TOOL_TIMEOUT_SECS=3,
        KIMI_TIMEOUT_SECS=2,
        EXAI_MAX_ATTEMPTS=2,
        EXAI_BREAKER_FAILURES=100,
        GLM_BASE_URL=f"http://127.0.0.1:{closed_port()}/api/paas/v4",
    )
    async with Client(stdio_params(env)) as client:
        for n, (replies, opening, settings) in enumerate(CASES):
            fake.enqueue(*replies)
            result = await client.call_tool("analyze", {"text": f"q{n}", "model": "kimi-k2"})
            assert result.is_error
            check(result.content[0].text, opening, *settings)
            assert fake.pending_replies == 0
        unreachable = await client.call_tool("analyze", {"text": "u", "model": "glm-4.6"})
        status = await read_status(client)
    check(
        unreachable.content[0].text,
        "glm:glm-4.6 is unreachable: cannot connect to http://127.0.0.1:",
        "2 attempts (EXAI_MAX_ATTEMPTS=2)",
        "GLM_BASE_URL",
    )
    errors = status["providers"]["kimi"]["errors"]
    assert errors["malformed"] == 2 and errors["stream_cut"] == 2  # each under its own kind


async def test_a_malformed_reply_followed_by_a_good_one_gives_an_answer(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(malformed=True), Reply(cut_after=1), Reply())
    async with Client(stdio_params(provider_env(fake, tmp_path))) as client:
        result = await client.call_tool("analyze", {"text": "q", "model": "kimi-k2"})
        status = await read_status(client)
    assert not result.is_error, result.content
    assert result.structured_content["analysis"].startswith("Fake expert answer")
    kimi = status["providers"]["kimi"]
    assert fake.chat_count == 3 and kimi["retries"] == 2
    assert kimi["errors"] == {"malformed": 1, "stream_cut": 1}
    assert kimi["breaker"]["consecutive_failures"] == 0  # counted, then cleared by the success


@pytest.mark.parametrize("keep_alive", [True, False], ids=["chunked", "close-delimited"])
async def test_a_stream_cut_mid_answer_is_the_providers_fault_whatever_the_framing(
    keep_alive: bool,
) -> None:
    async with FakeProvider(keep_alive=keep_alive, answer="one two three four five six") as f:
        f.enqueue(Reply(cut_after=1))
        provider = create_kimi(api_key="k", base_url=f.base_url("/v1"))
        try:
            with pytest.raises(StreamCut, match="stream stopped after 1 token "):
                await provider.complete(
                    ChatRequest(model="kimi-k2", system="", user="x"), timeout=5
                )
        finally:
            await provider.aclose()


async def test_a_request_past_its_server_deadline_says_so_first_and_names_the_setting() -> None:
    deadline = Deadline.after(0.05)
    with (
        pytest.raises(DeadlineExceeded) as caught,
        deadline.enforce("the analyze request", SERVER_DEADLINE_SETTING),
    ):
        await anyio.sleep_forever()
    text = str(caught.value)
    assert text.startswith("the analyze request timed out: ")
    assert "WORKFLOW_TOOL_TIMEOUT_SECS" in text.partition("; ")[0]


async def test_a_workflow_expert_timeout_names_the_expert_budget_not_the_tool_timeout(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(hang=True))
    settings = settings_for(
        fake, tmp_path, WORKFLOW_TOOL_TIMEOUT_SECS=3, EXPERT_ANALYSIS_TIMEOUT_SECS=1
    )
    final_step = {
        "kind": "debug",
        "step": "the one step",
        "step_number": 1,
        "total_steps": 1,
        "next_step_required": False,
        "findings": "what was found",
        "model": "kimi-k2",
    }
    async with in_process_client(settings) as client:
        result = await client.call_tool("workflow", final_step)
    assert result.is_error
    check(
        result.content[0].text,
        f"{KIMI} timed out: no answer within the ",
        "1 attempt, no time left in the 1 s budget (EXPERT_ANALYSIS_TIMEOUT_SECS)",
        "raise EXPERT_ANALYSIS_TIMEOUT_SECS",
    )
