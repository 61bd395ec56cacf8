"""The tool's own layer: where a call's plan is made and where each caller's reply is finished."""

from __future__ import annotations

from typing import Any

from exai_mcp.middleware.call import Answer, Call, Next, Plan, call_key


class RunTool:
    """Layer: the tool plans the call, and finishes it for this caller with the answer.

    Everything below works on the shared answer; `finish` writes this caller's own state (its
    thread), so callers that share an answer never share a thread.
    """

    async def __call__(self, call: Call, call_next: Next) -> object:
        plan: Plan[Any] = await call.prepare()
        if plan.ask is None:
            return await plan.finish(None)
        key = call_key(call.tool, plan.key) if plan.key is not None else None
        answer: Answer = await call_next(call.replace(plan=plan, key=key))
        return await plan.finish(answer)
