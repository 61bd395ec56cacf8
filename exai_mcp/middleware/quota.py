"""Provider quotas: requests and tokens per minute, one token bucket per provider and kind.

    bucket = TokenBucket(per_minute=30)                 # holds 30, refills 30 a minute
    admitted, wait = await bucket.reserve(1, max_wait=deadline.remaining())

`reserve` books the cost at once and says how long to wait before spending it: a booking is
never overtaken by a later one (first come, first served), and one that would have to wait past
`max_wait` is not booked at all. The bucket starts full, so a burst of up to a minute's quota
goes at once. With EXAI_REDIS_URL the buckets live in Redis (`shared.quota`) and every process
draws on the same ones; this is the in-process one.

As a layer (`EnforceQuota`), before every attempt: one request from the RPM bucket and the
prompt's estimated tokens from the TPM bucket; the answer's tokens are charged after it. A call
that cannot get its quota before its deadline fails at once with `QuotaExhausted` naming the
variable; one that can sleeps until its turn, telling the client why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio

from exai_mcp.errors import QuotaExhausted
from exai_mcp.files import estimate_tokens
from exai_mcp.middleware.call import Call, Next
from exai_mcp.providers.base import ChatResult


class Bucket(Protocol):
    per_minute: int

    async def reserve(self, cost: int, max_wait: float) -> tuple[bool, float]: ...


class TokenBucket:
    __slots__ = ("_clock", "_stamp", "_tokens", "per_minute")

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._tokens = float(per_minute)
        self._stamp = clock()

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self.per_minute / 60.0

    def available(self) -> float:
        now = self._clock()
        self._tokens = min(self.per_minute, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens

    def reserve_now(self, cost: int, max_wait: float) -> tuple[bool, float]:
        """(booked, seconds to wait before spending); not booked when that is past max_wait.

        A cost above the whole bucket is capped at it: such a call waits for a full bucket
        rather than forever."""
        cost = min(cost, self.per_minute)
        tokens = self.available()
        wait = 0.0 if tokens >= cost else (cost - tokens) / self.rate
        if wait > max_wait:
            return False, wait
        self._tokens = tokens - cost
        return True, wait

    async def reserve(self, cost: int, max_wait: float) -> tuple[bool, float]:
        return self.reserve_now(cost, max_wait)


@dataclass(frozen=True, slots=True)
class ProviderQuota:
    """One provider's buckets, each with the variable that sets it (for the error)."""

    provider: str
    rpm: Bucket | None = None
    rpm_variable: str = ""
    tpm: Bucket | None = None
    tpm_variable: str = ""


class EnforceQuota:
    """Layer, before every attempt: the provider's requests- and tokens-per-minute quota."""

    def __init__(self, quotas: Mapping[str, ProviderQuota]) -> None:
        self.quotas = quotas

    async def __call__(self, call: Call, call_next: Next) -> ChatResult:
        quota = self.quotas.get(call.provider)
        if quota is None:
            result: ChatResult = await call_next(call)
            return result
        if quota.rpm is not None:
            await self._take(call, quota.rpm, 1, quota.rpm_variable, "request")
        if quota.tpm is not None and call.chat is not None:
            prompt = estimate_tokens(call.chat.system + call.chat.user)
            await self._take(call, quota.tpm, prompt, quota.tpm_variable, "token")
        result = await call_next(call)
        if quota.tpm is not None and result.completion_tokens:
            # Charged after the fact: the answer's size is not known before.
            await quota.tpm.reserve(result.completion_tokens, float("inf"))
        return result

    async def _take(self, call: Call, bucket: Bucket, cost: int, variable: str, what: str) -> None:
        booked, wait = await bucket.reserve(cost, call.deadline.remaining())
        if not booked:
            raise QuotaExhausted(
                f"{call.provider} is rate limited by this server's own quota: "
                f"{variable}={bucket.per_minute} has no room for this call's {cost} {what}"
                f"{'' if cost == 1 else 's'} before its deadline (room in {wait:.0f} s); retry "
                f"later, or raise {variable} if your API key allows more",
                provider=call.provider,
                model=call.model.id if call.model else "",
                retry_after=wait,
            )
        if wait > 0:
            call.report(f"waiting {wait:.1f} s for {call.provider}'s quota ({variable})")
            await anyio.sleep(wait)
