"""A request's deadline: one point in time that every layer below counts against.

    deadline = Deadline.after(timeouts.server_deadline)      # at the request's arrival
    with deadline.enforce("analyze"):                           # DeadlineExceeded when it passes
        budget = deadline.within(timeouts.tool)                 # a nested budget, never later

Guarantees: code inside `enforce` is cancelled when the deadline passes and the caller gets
`DeadlineExceeded`; a `TimeoutError` raised for another reason inside passes through unchanged.
A deadline can be moved later (`extend_to`: a shared execution runs until its latest waiter's
deadline); scopes entered with `enforce` follow the move, and so does every nested budget made
with `within`, which keeps its distance to the end of the deadline it was cut from.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio

from exai_mcp.errors import DeadlineExceeded
from exai_mcp.middleware.call import Call, Next

WAIT_MARGIN = 0.05  # seconds a wait leaves of its deadline, for its own clearer error


class Deadline:
    __slots__ = ("_at", "_lag", "_parent", "_scopes", "budget", "started")

    def __init__(
        self, at: float, budget: float, started: float, *, parent: Deadline | None = None
    ) -> None:
        self._at = at
        self.budget = budget
        self.started = started
        self._parent = parent
        # A nested budget ends this long before its parent does, wherever the parent moves.
        self._lag = parent.at - at if parent is not None else 0.0
        self._scopes: list[anyio.CancelScope] = []

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        now = time.monotonic()
        return cls(now + seconds, seconds, now)

    @property
    def at(self) -> float:
        """The deadline on the `time.monotonic()` clock."""
        if self._parent is not None:
            return self._parent.at - self._lag
        return self._at

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def left_to_wait(self) -> float:
        """How long a wait (for a permit) may last: a moment less than what remains, so the
        waiter's own error, saying what it waited for, comes before the deadline's."""
        return max(0.0, self.remaining() - WAIT_MARGIN)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def within(self, seconds: float) -> Deadline:
        """A nested budget: `seconds` from now, but never past this deadline."""
        now = time.monotonic()
        return Deadline(min(self.at, now + seconds), seconds, now, parent=self)

    def copy(self) -> Deadline:
        """An independent deadline at the same point, e.g. for an execution several share."""
        return Deadline(self.at, self.budget, self.started)

    def extend_to(self, at: float) -> None:
        """Move the deadline later (never earlier); running `enforce` scopes move with it."""
        if self._parent is not None:
            raise ValueError("a nested budget moves with its parent; extend the parent")
        if at <= self._at:
            return
        self._at = at
        for scope in self._scopes:
            scope.deadline = anyio.current_time() + self.remaining()

    @contextmanager
    def enforce(self, what: str, setting: str = "") -> Iterator[None]:
        """`setting` names what sets this budget, for the message when it runs out."""
        with anyio.CancelScope(deadline=anyio.current_time() + self.remaining()) as scope:
            self._scopes.append(scope)
            try:
                yield
            finally:
                self._scopes.remove(scope)
        if scope.cancelled_caught:
            set_by = f" ({setting})" if setting else ""
            raise DeadlineExceeded(
                f"{what} timed out: it did not finish within its {self.budget:g} s budget"
                f"{set_by}; gave up after {self.elapsed():.1f} s"
            )


SERVER_DEADLINE_SETTING = "the server deadline, ceil(1.5 x WORKFLOW_TOOL_TIMEOUT_SECS)"


class EnforceDeadline:
    """Layer: the caller's own deadline, counted from the request's arrival."""

    async def __call__(self, call: Call, call_next: Next) -> object:
        with call.deadline.enforce(f"the {call.tool} request", SERVER_DEADLINE_SETTING):
            return await call_next(call)


class ProviderBudget:
    """Layer: the provider path gets the tool's budget (T, or the expert timeout), cut to what
    is left of the deadline, so the caller keeps time to record and answer."""

    async def __call__(self, call: Call, call_next: Next) -> object:
        return await call_next(call.replace(deadline=call.deadline.within(call.ask.budget)))
