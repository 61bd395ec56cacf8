"""The Redis twins of the in-process state, each against a real redis-server.

Two `RedisLink`s stand for two server processes: they share nothing but the Redis.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from exai_mcp.errors import AuthRejected, BreakerOpen, BusyError
from exai_mcp.middleware.cache import ResultCache
from exai_mcp.middleware.call import Answer
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.middleware.limits import Holder, TrackedLimiter
from exai_mcp.middleware.quota import TokenBucket
from exai_mcp.shared.breaker import SharedBreaker
from exai_mcp.shared.cache import SharedCache
from exai_mcp.shared.connection import RedisLink, SharedUnavailable
from exai_mcp.shared.flights import SharedFlights
from exai_mcp.shared.permits import SharedLimiter
from exai_mcp.shared.quota import SharedBucket
from tests.redis_server import RedisServer, free_port

LEASE = 0.6  # seconds: a dead process's lease lapses this fast in these tests


def answer(text: str = "an answer") -> Answer:
    return Answer(text, "kimi-k2", "kimi", 3, 5, 12, files_left_out=(("/a", "too big"),))


@asynccontextmanager
async def link_to(url: str, prefix: str, *, lease: float = LEASE) -> AsyncIterator[RedisLink]:
    link = RedisLink(url, prefix=prefix, timeout=0.5, lease=lease)
    async with anyio.create_task_group() as tg:
        await link.start(tg)
        try:
            yield link
        finally:
            tg.cancel_scope.cancel()
            await link.aclose()


# ----------------------------------------------------------------------------- cache


async def test_an_answer_kept_by_one_server_is_a_hit_on_the_other(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with link_to(redis_server.url, redis_prefix) as a, link_to(redis_server.url, redis_prefix) as b:  # fmt: skip
        first = SharedCache(a, local=ResultCache(max_entries=10, ttl=60))
        second = SharedCache(b, local=ResultCache(max_entries=10, ttl=60))
        assert await second.lookup("k") is None
        await first.keep("k", answer())
        assert await second.lookup("k") == answer()
        assert (second.hits, second.misses) == (1, 1)


async def test_the_entry_bound_holds_across_servers_least_recently_used_first(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with link_to(redis_server.url, redis_prefix) as a, link_to(redis_server.url, redis_prefix) as b:  # fmt: skip
        first = SharedCache(a, local=ResultCache(max_entries=2, ttl=60))
        second = SharedCache(b, local=ResultCache(max_entries=2, ttl=60))
        await first.keep("one", answer("1"))
        await second.keep("two", answer("2"))
        await anyio.sleep(0.005)
        assert await first.lookup("one") is not None  # "one" is now the most recent use
        await second.keep("three", answer("3"))
        assert await first.lookup("two") is None
        assert await first.lookup("one") is not None
        assert len(second) == 2


async def test_entries_expire_with_the_ttl(redis_server: RedisServer, redis_prefix: str) -> None:
    async with link_to(redis_server.url, redis_prefix) as a:
        cache = SharedCache(a, local=ResultCache(max_entries=10, ttl=0.2))
        await cache.keep("k", answer())
        assert await cache.lookup("k") is not None
        await anyio.sleep(0.3)
        assert await cache.lookup("k") is None


async def test_without_redis_the_cache_degrades_to_this_process_within_the_timeout(
    redis_prefix: str,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with link_to(dead, redis_prefix) as link:
        assert link.degraded
        cache = SharedCache(link, local=ResultCache(max_entries=10, ttl=60))
        started = time.monotonic()
        await cache.keep("k", answer())
        assert await cache.lookup("k") == answer()
        assert time.monotonic() - started < 0.5  # degraded: no wait on Redis at all
        with pytest.raises(SharedUnavailable):
            await link.run(lambda r: r.ping())


# ----------------------------------------------------------------------------- single-flight


async def test_identical_calls_on_two_servers_run_once(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    runs = 0
    release = anyio.Event()
    results: list[Answer] = []

    async def work() -> Answer:
        nonlocal runs
        runs += 1
        await release.wait()
        return answer("shared")

    async with link_to(redis_server.url, redis_prefix) as a, link_to(redis_server.url, redis_prefix) as b:  # fmt: skip
        flights = [SharedFlights(a), SharedFlights(b)]

        async def call(f: SharedFlights) -> None:
            results.append(await f.run("key", work, deadline=Deadline.after(10), report=print))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, flights[0])
            await anyio.sleep(0.1)
            tg.start_soon(call, flights[1])
            await anyio.sleep(0.1)
            release.set()
    assert runs == 1
    assert results == [answer("shared")] * 2
    assert flights[1].joined == 1


async def test_a_waiter_takes_over_when_the_leader_died_within_the_lease(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with link_to(redis_server.url, redis_prefix) as link:
        # A leader that died: its lease is there, nobody renews it, nobody will publish.
        await link.run(
            lambda r: r.set(link.key("flight", "key"), "dead-token", px=int(LEASE * 1000))
        )
        flights = SharedFlights(link)
        started = time.monotonic()

        async def work() -> Answer:
            return answer("mine")

        with anyio.fail_after(LEASE * 3):
            got = await flights.run("key", work, deadline=Deadline.after(10), report=print)
        assert got == answer("mine")
        assert time.monotonic() - started <= LEASE + 0.3
        assert flights.takeovers == 1


async def test_a_leader_that_fails_hands_over_at_once_not_after_the_lease(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    lease = 5.0
    async with link_to(redis_server.url, redis_prefix, lease=lease) as a, link_to(redis_server.url, redis_prefix, lease=lease) as b:  # fmt: skip
        leader, waiter = SharedFlights(a), SharedFlights(b)
        started_waiting = anyio.Event()

        async def failing() -> Answer:
            await started_waiting.wait()
            await anyio.sleep(0.1)
            raise RuntimeError("provider down")

        async def fine() -> Answer:
            return answer("second try")

        got: list[Answer] = []

        async def lead() -> None:
            with pytest.raises(RuntimeError):
                await leader.run("key", failing, deadline=Deadline.after(10), report=print)

        async def wait() -> None:
            started_waiting.set()
            got.append(await waiter.run("key", fine, deadline=Deadline.after(10), report=print))

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lead)
            await anyio.sleep(0.05)
            tg.start_soon(wait)
        assert got == [answer("second try")]
        assert time.monotonic() - started < 1.5  # well before the 5 s lease


# ----------------------------------------------------------------------------- permits


async def test_a_shared_limit_of_two_holds_across_two_servers(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    active = peak = 0

    async def body(limiter: SharedLimiter, n: int) -> None:
        nonlocal active, peak
        async with limiter.hold(Holder(f"r{n}", "analyze", "kimi"), Deadline.after(10)):
            active += 1
            peak = max(peak, active)
            await anyio.sleep(0.05)
            active -= 1

    async with link_to(redis_server.url, redis_prefix) as a, link_to(redis_server.url, redis_prefix) as b:  # fmt: skip
        limiters = [SharedLimiter(a, TrackedLimiter("kimi", 2)), SharedLimiter(b, TrackedLimiter("kimi", 2))]  # fmt: skip
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(body, limiters[n % 2], n)
        assert peak == 2
        snapshot = await limiters[0].snapshot()
        assert snapshot["in_use"] == 0 and snapshot["waiting"] == 0


async def test_a_dead_holders_permit_comes_back_within_the_lease(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with link_to(redis_server.url, redis_prefix) as a, link_to(redis_server.url, redis_prefix) as b:  # fmt: skip
        dying = SharedLimiter(a, TrackedLimiter("kimi", 1))
        other = SharedLimiter(b, TrackedLimiter("kimi", 1))
        holder = Holder("r1", "analyze", "kimi")
        manager = dying.hold(holder, Deadline.after(10))
        await manager.__aenter__()  # taken, and then the process "dies": no renewal, no release
        a.release_all_leases()
        snapshot = await other.snapshot()
        assert snapshot["in_use"] == 1 and snapshot["holders"][0]["request_id"] == "r1"
        started = time.monotonic()
        with anyio.fail_after(LEASE * 3):
            async with other.hold(Holder("r2", "analyze", "kimi"), Deadline.after(10)):
                waited = time.monotonic() - started
        assert waited <= LEASE + 0.3


async def test_a_waiter_that_runs_out_of_deadline_is_busy_and_leaves_the_line(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with link_to(redis_server.url, redis_prefix, lease=5) as a, link_to(redis_server.url, redis_prefix, lease=5) as b:  # fmt: skip
        first = SharedLimiter(a, TrackedLimiter("glm", 1))
        second = SharedLimiter(b, TrackedLimiter("glm", 1))
        async with first.hold(Holder("r1", "analyze", "glm"), Deadline.after(10)):
            with pytest.raises(BusyError, match="shared with other servers"):
                async with second.hold(Holder("r2", "analyze", "glm"), Deadline.after(0.3)):
                    pass
            assert (await first.snapshot())["waiting"] == 0
        assert (await first.snapshot())["in_use"] == 0


async def test_waiters_on_two_servers_are_served_first_come_first_served(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    order: list[str] = []
    async with link_to(redis_server.url, redis_prefix, lease=5) as a, link_to(redis_server.url, redis_prefix, lease=5) as b:  # fmt: skip
        limiters = [SharedLimiter(a, TrackedLimiter("kimi", 1)), SharedLimiter(b, TrackedLimiter("kimi", 1))]  # fmt: skip
        gate = anyio.Event()

        async def take(n: int) -> None:
            async with limiters[n % 2].hold(Holder(f"r{n}", "t", "kimi"), Deadline.after(10)):
                order.append(f"r{n}")
                if n == 0:
                    await gate.wait()

        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(take, n)
                await anyio.sleep(0.05)  # arrival order r0, r1, r2, ...
            gate.set()
    assert order == ["r0", "r1", "r2", "r3", "r4"]


# ----------------------------------------------------------------------------- quotas


def test_the_bucket_admits_a_minutes_quota_at_once_then_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(30, clock=lambda: now[0])
    assert all(bucket.reserve_now(1, 0)[0] for _ in range(30))
    booked, wait = bucket.reserve_now(1, 0)
    assert not booked and wait == pytest.approx(2.0)  # 30 a minute: one every 2 s
    booked, wait = bucket.reserve_now(1, max_wait=2.0)
    assert booked and wait == pytest.approx(2.0)  # booked now, spent in 2 s
    assert bucket.reserve_now(1, max_wait=3.0) == (False, pytest.approx(4.0))  # behind it
    now[0] += 4
    assert bucket.reserve_now(1, 0) == (True, 0.0)  # 2 tokens came back in 4 s
    now[0] += 60
    assert bucket.available() == 30  # never more than a minute's quota


def test_a_cost_above_the_whole_bucket_waits_for_a_full_bucket_not_forever() -> None:
    now = [0.0]
    bucket = TokenBucket(100, clock=lambda: now[0])
    assert bucket.reserve_now(60, 0) == (True, 0.0)
    booked, wait = bucket.reserve_now(500, max_wait=100)
    assert booked and wait == pytest.approx(36.0)  # 60 tokens short at 100 a minute


async def test_two_servers_draw_on_one_bucket(redis_server: RedisServer, redis_prefix: str) -> None:
    async with link_to(redis_server.url, redis_prefix) as a, link_to(redis_server.url, redis_prefix) as b:  # fmt: skip
        buckets = [SharedBucket(a, "kimi:rpm", local=TokenBucket(6)), SharedBucket(b, "kimi:rpm", local=TokenBucket(6))]  # fmt: skip
        booked = [(await buckets[n % 2].reserve(1, 0))[0] for n in range(12)]
        assert booked.count(True) == 6
        ok, wait = await buckets[0].reserve(1, 0)
        assert not ok and 9 <= wait <= 10  # 6 a minute: the next one in about 10 s


# ----------------------------------------------------------------------------- breaker


async def test_a_breaker_opened_on_one_server_is_open_on_the_other(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with link_to(redis_server.url, redis_prefix) as a, link_to(redis_server.url, redis_prefix) as b:  # fmt: skip
        here = SharedBreaker(a, "kimi", failures=5, cooldown=30)
        there = SharedBreaker(b, "kimi", failures=5, cooldown=30)
        with pytest.raises(AuthRejected):
            async with here.guard():
                raise AuthRejected("key rejected", provider="kimi")
        with pytest.raises(BreakerOpen, match="seen by another server"):
            async with there.guard():
                pytest.fail("the provider must not be called")
        await there.refresh()
        assert not there.available()


# ----------------------------------------------------------------------------- reconnection


async def shared_again(link: RedisLink) -> None:
    """Until the link has reconnected (bounded): it does so in the background, on its own
    schedule, so it is polled."""
    with anyio.fail_after(10):
        while True:
            if not link.degraded:
                return
            await anyio.sleep(0.05)


async def test_once_redis_is_back_no_connection_of_the_old_one_degrades_the_state_again(
    own_redis: RedisServer, redis_prefix: str
) -> None:
    """Connections pooled before a restart died with it; recovery must not hand them out."""
    at_once = 5

    async def blocking_reads(link: RedisLink) -> None:  # each holds its own connection
        async with anyio.create_task_group() as tg:
            for n in range(at_once):
                tg.start_soon(link.run, lambda r, n=n: r.blpop([f"{redis_prefix}none{n}"], 0.2))

    async with link_to(own_redis.url, redis_prefix) as link:
        await blocking_reads(link)  # the pool now holds `at_once` connections
        own_redis.restart()
        with pytest.raises(SharedUnavailable):
            await link.run(lambda r: r.ping())
        await shared_again(link)
        failures = link.failures
        await blocking_reads(link)
        assert not link.degraded
        assert link.failures == failures


async def test_a_waiter_that_went_degraded_leaves_the_shared_line_once_redis_is_back(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Its place would otherwise hold up every server's waiters until its heartbeat lapsed."""
    async with link_to(redis_server.url, redis_prefix, lease=5) as a, link_to(redis_server.url, redis_prefix, lease=5) as b:  # fmt: skip
        holding = SharedLimiter(a, TrackedLimiter("kimi", 1))
        waiting = SharedLimiter(b, TrackedLimiter("kimi", 1))
        queued = anyio.Event()
        async with holding.hold(Holder("r1", "analyze", "kimi"), Deadline.after(10)):
            async with anyio.create_task_group() as tg:

                async def wait_in_line() -> None:
                    holder = Holder("r2", "analyze", "kimi")
                    on_wait = lambda _message: queued.set()  # noqa: E731
                    async with waiting.hold(holder, Deadline.after(10), on_wait):
                        pass  # admitted in-process once its link went degraded

                tg.start_soon(wait_in_line)
                await queued.wait()
                assert (await holding.snapshot())["waiting"] == 1
                b.mark_failed(ConnectionError("a blip"))  # Redis itself stays up
                # Wake the waiter now (as a release would): it finds its link degraded and
                # goes on in-process, long before the link reconnects (0.2 s).
                await a.client.publish(waiting._channel, "wake")
            await shared_again(b)
            assert waiting.degraded_admits == 1
            assert (await holding.snapshot())["waiting"] == 0
