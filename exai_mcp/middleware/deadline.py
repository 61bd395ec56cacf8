"""A request's deadline: one absolute point in time that every layer below counts against.

    deadline = Deadline.after(timeouts.server_deadline)      # at the request's arrival
    with deadline.enforce("analyze"):                           # DeadlineExceeded when it passes
        attempt_budget = min(attempt_timeout, deadline.remaining())

Guarantee: code inside `enforce` is cancelled when the deadline passes and the caller gets
`DeadlineExceeded`; a `TimeoutError` raised for another reason inside passes through unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio

from exai_mcp.errors import DeadlineExceeded


class Deadline:
    __slots__ = ("at", "budget", "started")

    def __init__(self, at: float, budget: float, started: float) -> None:
        self.at = at
        self.budget = budget
        self.started = started

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        now = time.monotonic()
        return cls(now + seconds, seconds, now)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def within(self, seconds: float) -> Deadline:
        """A nested budget: `seconds` from now, but never past this deadline."""
        now = time.monotonic()
        return Deadline(min(self.at, now + seconds), seconds, now)

    @contextmanager
    def enforce(self, what: str) -> Iterator[None]:
        with anyio.move_on_after(self.remaining()) as scope:
            yield
        if scope.cancelled_caught:
            raise DeadlineExceeded(
                f"{what} did not finish within its {self.budget:g} s budget "
                f"(gave up after {self.elapsed():.1f} s)"
            )
