"""`GET /metrics`: what an operator's Prometheus scrapes counts exactly what happened.

A scripted run against the real HTTP server (uvicorn on an ephemeral port, the fake provider
behind it), scraped and parsed with prometheus_client's own parser; the counters are checked
against the script, against what the fake provider saw, and against `status`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
from fake_provider import FakeProvider, Reply
from prometheus_client.parser import text_string_to_metric_families

from exai_mcp import __version__
from exai_mcp.observability.metrics import model_label
from tests.conftest import settings_for
from tests.test_http import TOKEN, call_body, http_server, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx2.AsyncClient) -> Samples:
    reply = await http.get("/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series is absent (a counter that never moved)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def test_a_scripted_run_is_counted_exactly_as_it_happened(fake: FakeProvider, tmp_path: Path):
    settings = settings_for(fake, tmp_path, EXAI_CANCEL_GRACE_SECS=0)
    answers: list[dict[str, Any]] = []
    async with http_server(settings) as srv, srv.rest() as http:

        async def post(text: str) -> None:
            reply = await http.post("/api/v1/execute", json=call_body(text))
            answers.append(reply.json())

        flights = lambda: srv.state.services.pipeline.flights  # noqa: E731
        with anyio.fail_after(30):
            # Three identical calls at once: one provider request, two joined.
            fake.hold()
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(post, "same question")
                await fake.wait_for_active(1)
                await wait_until(lambda: flights().coalesced == 2, timeout=5)
                during = await scrape(http)
                fake.release()
            await post("a distinct question")
            fake.enqueue(Reply(status=500))  # the first attempt fails, the retry answers
            await post("a flaky question")
            # One cancel: the caller leaves while the provider works on it.
            fake.hold()
            with anyio.move_on_after(5):
                async with anyio.create_task_group() as tg:

                    async def leave_once_the_provider_has_it() -> None:
                        await fake.wait_for_requests(6)
                        tg.cancel_scope.cancel()

                    tg.start_soon(leave_once_the_provider_has_it)
                    await post("a question nobody waits for")
            await fake.wait_for_disconnects(1, timeout=5)
            await wait_until(lambda: srv.state.calls_in_flight == 0, timeout=5)
            fake.release()
            after = await scrape(http)
            status = (
                await http.post("/api/v1/execute", json={"tool": "status", "arguments": {}})
            ).json()["structuredContent"]

    # While the three waited: three calls in the pipeline, one request holding both permits.
    assert value(during, "exai_inflight_calls") == 3
    assert value(during, "exai_limit_permits_in_use", limit="kimi") == 1
    assert value(during, "exai_limit_permits_in_use", limit="global") == 1

    assert [a["isError"] for a in answers] == [False] * 5
    model = model_label(settings.kimi_default_model)
    assert value(after, "exai_tool_calls_total", tool="analyze", outcome="ok") == 5
    assert value(after, "exai_tool_calls_total", tool="analyze", outcome="cancelled") == 1
    assert value(after, "exai_tool_calls_total", tool="analyze", outcome="error") == 0
    assert value(after, "exai_tool_calls_total", tool="analyze", outcome="cached") == 0
    assert value(after, "exai_tool_call_duration_seconds_count", tool="analyze") == 6
    assert value(after, "exai_inflight_calls") == 0
    assert value(after, "exai_singleflight_coalesced_total") == 2
    assert value(after, "exai_cache_hits_total") == 0
    assert value(after, "exai_cache_misses_total") == 6
    assert value(after, "exai_cache_entries") == 3  # the answers; never the cancelled call

    # Against what the provider saw: five requests, three answered, one 500, one abandoned.
    assert fake.chat_count == 5
    assert total(after, "exai_provider_requests_total", provider="kimi") == fake.chat_count
    assert (
        value(after, "exai_provider_requests_total", provider="kimi", model=model, status="ok") == 3
    )
    assert value(after, "exai_provider_requests_total", provider="kimi", model=model, status="unavailable") == 1  # fmt: skip
    assert value(after, "exai_provider_requests_total", provider="kimi", model=model, status="cancelled") == 1  # fmt: skip
    assert value(after, "exai_provider_retries_total", provider="kimi", reason="unavailable") == 1
    assert total(after, "exai_provider_retries_total") == 1
    assert value(after, "exai_provider_request_duration_seconds_count", provider="kimi") == 5
    answered = [answers[0], *answers[3:]]  # one of the three identical, then the other two
    for kind, field in (("input", "prompt_tokens"), ("output", "completion_tokens")):
        expected = sum(a["structuredContent"]["usage"][field] for a in answered)
        assert value(after, "exai_provider_tokens_total", provider="kimi", kind=kind) == expected

    # Every attempt took both permits, and gave them back.
    for limit in ("kimi", "global"):
        assert value(after, "exai_limit_wait_seconds_count", limit=limit) == 5
        assert value(after, "exai_limit_permits_in_use", limit=limit) == 0
        assert value(after, "exai_limit_waiting", limit=limit) == 0
    assert value(after, "exai_limit_permits", limit="kimi") == settings.kimi_max_inflight
    assert value(after, "exai_limit_permits", limit="global") == settings.max_inflight
    assert value(after, "exai_breaker_state", provider="kimi") == 0
    assert total(after, "exai_health_problems") == 0
    assert value(after, "exai_build_info", version=__version__) == 1

    # `status` reads the same counters.
    assert status["calls"]["count"] == 6 and status["calls"]["errors"] == 0
    kimi = status["providers"]["kimi"]
    assert (kimi["requests"], kimi["successes"], kimi["retries"]) == (5, 3, 1)
    assert kimi["errors"] == {"unavailable": 1}
    assert status["cache"]["misses"] == 6 and status["calls"]["coalesced_waiters"] == 2


async def test_a_cached_answer_and_a_failed_call_have_their_own_outcomes(
    fake: FakeProvider, tmp_path: Path
):
    settings = settings_for(fake, tmp_path, EXAI_MAX_ATTEMPTS=1)
    async with http_server(settings) as srv, srv.rest() as http:
        with anyio.fail_after(20):
            for _ in range(2):
                await http.post("/api/v1/execute", json=call_body("asked twice"))
            fake.enqueue(Reply(status=400))
            await http.post("/api/v1/execute", json=call_body("refused"))
            samples = await scrape(http)
    assert value(samples, "exai_tool_calls_total", tool="analyze", outcome="ok") == 1
    assert value(samples, "exai_tool_calls_total", tool="analyze", outcome="cached") == 1
    assert value(samples, "exai_tool_calls_total", tool="analyze", outcome="error") == 1
    assert value(samples, "exai_cache_hits_total") == 1
    assert total(samples, "exai_provider_requests_total", status="bad_request") == 1


async def test_an_unknown_model_id_is_counted_as_other(fake: FakeProvider, tmp_path: Path):
    settings = settings_for(fake, tmp_path)
    call = {"tool": "analyze", "arguments": {"text": "hi", "model": "kimi:some-new-model-2027"}}
    async with http_server(settings) as srv, srv.rest() as http:
        with anyio.fail_after(20):
            reply = await http.post("/api/v1/execute", json=call)
            samples = await scrape(http)
    assert reply.json()["isError"] is False
    assert value(samples, "exai_provider_requests_total", provider="kimi", model="other", status="ok") == 1  # fmt: skip
    assert not any("some-new-model" in str(labels) for (_name, labels) in samples)


async def test_metrics_need_the_token_like_every_endpoint_but_health(
    fake: FakeProvider, tmp_path: Path
):
    settings = settings_for(fake, tmp_path, EXAI_HTTP_TOKEN=TOKEN)
    async with http_server(settings) as srv:
        async with srv.rest() as anonymous:
            refused = await anonymous.get("/metrics")
        async with srv.rest(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            samples = await scrape(http)
    assert refused.status_code == 401
    assert value(samples, "exai_build_info", version=__version__) == 1


async def test_two_servers_in_one_process_keep_their_own_series(fake: FakeProvider, tmp_path: Path):
    one = settings_for(fake, tmp_path, EXAI_STATE_DB=str(tmp_path / "one.sqlite3"))
    two = settings_for(fake, tmp_path, EXAI_STATE_DB=str(tmp_path / "two.sqlite3"))
    async with (
        http_server(one) as first,
        http_server(two) as second,
        first.rest() as http_one,
        second.rest() as http_two,
    ):
        with anyio.fail_after(20):
            await http_one.post("/api/v1/execute", json=call_body("only the first"))
            counted = await scrape(http_one), await scrape(http_two)
    assert value(counted[0], "exai_tool_calls_total", tool="analyze", outcome="ok") == 1
    assert total(counted[1], "exai_tool_calls_total") == 0
