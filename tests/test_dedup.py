"""Identical concurrent calls share one provider request; results are cached; errors are not."""

from __future__ import annotations

from pathlib import Path

import anyio
from fake_provider import FakeProvider, Reply
from mcp import Client
from mcp_types import CallToolResult

from exai_mcp.middleware.call import call_key
from tests.conftest import (
    in_process_client,
    nothing_held,
    read_status,
    settings_for,
    wait_for_status,
)


async def identical_calls_answered_together(
    client: Client, fake: FakeProvider, arguments: dict, count: int
) -> list[CallToolResult]:
    """Send `count` identical calls while the provider holds its answer; release it once all
    of them are waiting (one at the provider, the rest joined to it)."""
    fake.hold()
    results: list[CallToolResult] = []

    async def call() -> None:
        results.append(await client.call_tool("analyze", arguments))

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(call)
        await fake.wait_for_requests(1)
        await wait_for_status(client, lambda s: s["calls"]["coalesced_waiters"] == count - 1)
        fake.release()
    return results


async def test_identical_concurrent_calls_make_one_provider_request(
    fake: FakeProvider, tmp_path: Path
) -> None:
    # one session sends all 20: let them all reach single-flight at once
    settings = settings_for(fake, tmp_path, EXAI_CLIENT_MAX_INFLIGHT=20)
    async with in_process_client(settings) as client:
        results = await identical_calls_answered_together(
            client, fake, {"text": "same question"}, 20
        )
        assert fake.chat_count == 1
        assert len(results) == 20 and not any(r.is_error for r in results)
        assert len({r.structured_content["analysis"] for r in results}) == 1

        again = await client.call_tool("analyze", {"text": "same question"})
        status = await read_status(client)
    assert again.structured_content["cached"] is True
    assert fake.chat_count == 1  # the cache hit cost no provider request
    assert status["cache"]["hits"] == 1


def test_key_ignores_argument_order_and_whitespace_of_the_clients_json() -> None:
    import json

    a = json.loads('{"text": "q", "focus": "security"}')
    b = json.loads('{ "focus":"security","text":"q" }')
    assert call_key("analyze", {"args": a, "model": "kimi:k"}) == call_key(
        "analyze", {"args": b, "model": "kimi:k"}
    )
    assert call_key("analyze", {"args": a, "model": "kimi:k"}) != call_key(
        "analyze", {"args": a, "model": "glm:k"}
    )


async def test_defaults_applied_make_explicit_and_implicit_defaults_one_call(
    fake: FakeProvider, tmp_path: Path
) -> None:
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        await client.call_tool("analyze", {"text": "q"})
        second = await client.call_tool(
            "analyze", {"focus": "general", "model": "auto", "text": "q", "files": []}
        )
    assert second.structured_content["cached"] is True and fake.chat_count == 1


async def test_an_error_reaches_every_waiter_and_is_not_cached(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.enqueue(Reply(status=400, error_message="context too long"))
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        results = await identical_calls_answered_together(client, fake, {"text": "q"}, 5)
        assert len(results) == 5
        assert all(r.is_error and "context too long" in r.content[0].text for r in results)

        retry = await client.call_tool("analyze", {"text": "q"})
        status = await read_status(client)
    assert not retry.is_error and retry.structured_content["cached"] is False
    assert fake.chat_count == 2
    assert nothing_held(status)


async def test_cache_can_be_switched_off(fake: FakeProvider, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path, EXAI_RESULT_CACHE_TTL_SECS=0)
    async with in_process_client(settings) as client:
        await client.call_tool("analyze", {"text": "q"})
        second = await client.call_tool("analyze", {"text": "q"})
    assert second.structured_content["cached"] is False and fake.chat_count == 2


async def test_cache_evicts_the_least_recently_used_entry(
    fake: FakeProvider, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path, EXAI_RESULT_CACHE_MAX_ENTRIES=2)
    async with in_process_client(settings) as client:
        for text in ("a", "b", "a", "c"):  # "b" is now the least recently used
            await client.call_tool("analyze", {"text": text})
        a = await client.call_tool("analyze", {"text": "a"})
        b = await client.call_tool("analyze", {"text": "b"})
        status = await read_status(client)
    assert a.structured_content["cached"] is True
    assert b.structured_content["cached"] is False
    assert status["cache"]["entries"] <= 2
