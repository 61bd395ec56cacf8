"""Single-flight across processes: identical calls on every server run once.

    flights = SharedFlights(link)
    answer = await flights.run(key, work, deadline=deadline, report=report)

Inside one process, `SingleFlight` already gathers identical callers into one execution; this
makes those executions meet across processes. The first takes a lease on the call key (a Redis
key holding a random token, with the lease time as its expiry) and keeps renewing it while it
works; the others subscribe to the key's channel and wait for the answer, which the leader
publishes (and also leaves for a lease's time, for a waiter that subscribed late).

Guarantees: a waiter never polls: it sleeps on the channel until the answer comes, or until
the leader's lease would run out. If the leader dies, its lease expires within
EXAI_REDIS_LEASE_SECS and a waiter takes over; if the leader fails or is cancelled (its grace
period over), it releases the lease and tells the waiters at once, and one of them takes over
(errors are not shared across processes: the next leader meets the same failure on its own).
When Redis cannot serve, the execution runs in this process alone (degraded).
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Awaitable, Callable

import anyio

from exai_mcp.middleware.call import Answer
from exai_mcp.middleware.deadline import Deadline
from exai_mcp.shared.codec import decode_answer, encode_answer
from exai_mcp.shared.connection import FAILURES, RedisLink, SharedUnavailable

MAX_TAKEOVERS = 5  # leaders that may vanish before this process runs the call alone
RELEASED = ""  # published when a leader leaves without an answer

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SharedFlights:
    __slots__ = ("_release", "_renew", "joined", "led", "link", "takeovers")

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.led = 0
        self.joined = 0
        """Answers this process received from another server's execution."""
        self.takeovers = 0
        self._renew = link.script(_RENEW)
        self._release = link.script(_RELEASE)

    async def run(
        self,
        key: str,
        work: Callable[[], Awaitable[Answer]],
        *,
        deadline: Deadline,
        report: Callable[[str], None],
    ) -> Answer:
        lease_key = self.link.key("flight", key)
        lease_ms = int(self.link.lease * 1000)
        for turn in range(MAX_TAKEOVERS):
            token = uuid.uuid4().hex
            try:
                took = await self.link.run(
                    lambda r, t=token: r.set(lease_key, t, nx=True, px=lease_ms)
                )
            except SharedUnavailable:
                return await work()
            if took:
                self.led += 1
                self.takeovers += turn > 0
                return await self._lead(key, token, work)
            report("an identical call is running on another server; waiting for its answer")
            try:
                answer = await self._wait(key, deadline)
            except SharedUnavailable:
                return await work()
            if answer is not None:
                self.joined += 1
                return answer
        return await work()

    async def _lead(self, key: str, token: str, work: Callable[[], Awaitable[Answer]]) -> Answer:
        lease_key, done_key = self.link.key("flight", key), self.link.key("flight-done", key)
        lease_ms = int(self.link.lease * 1000)
        handle = self.link.keep(lambda r: self._renew(keys=[lease_key], args=[token, lease_ms]))
        published = False
        try:
            answer = await work()
            text = encode_answer(answer)

            async def publish(r: object) -> None:
                pipe = self.link.client.pipeline(transaction=True)
                pipe.set(done_key, text, px=lease_ms)
                pipe.publish(done_key, text)
                await pipe.execute()

            try:
                await self.link.run(publish)
                published = True
            except SharedUnavailable:
                pass
            return answer
        finally:
            self.link.release(handle)
            with anyio.CancelScope(shield=True):
                try:
                    await self.link.run(lambda r: self._release(keys=[lease_key], args=[token]))
                    if not published:  # waiters take over now, not when the lease runs out
                        await self.link.run(lambda r: r.publish(done_key, RELEASED))
                except SharedUnavailable:
                    pass

    async def _wait(self, key: str, deadline: Deadline) -> Answer | None:
        """The leader's answer, or None when it left without one (then take over)."""
        lease_key, done_key = self.link.key("flight", key), self.link.key("flight-done", key)
        pubsub = self.link.client.pubsub()
        try:
            await self.link.run(lambda r: pubsub.subscribe(done_key))
            # Bounded: each turn sleeps until the leader's lease would lapse (a third of it
            # at least is left after every renewal), and the deadline bounds the turns.
            turns = math.ceil(deadline.remaining() / (self.link.lease / 3)) + 2
            for _ in range(turns):
                text = await self.link.run(lambda r: r.get(done_key))
                if text:
                    return decode_answer(text)
                left_ms = await self.link.run(lambda r: r.pttl(lease_key))
                if left_ms < 0:
                    return None  # no leader any more
                wait = min(left_ms / 1000 + 0.05, deadline.remaining())
                message = None
                try:
                    with anyio.move_on_after(wait + self.link.timeout):
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=wait
                        )
                except FAILURES as exc:
                    self.link.mark_failed(exc)
                    raise SharedUnavailable(str(self.link.url)) from None
                if message is not None:
                    data = message.get("data")
                    return decode_answer(data) if data else None
            return None
        finally:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(self.link.timeout),
                contextlib.suppress(FAILURES),
            ):
                await pubsub.aclose()

    def stats(self) -> dict[str, int]:
        return {"led": self.led, "joined": self.joined, "takeovers": self.takeovers}
