"""Threads as a model sees them: every tool stores a prompt-ready `digest` with each step.

Because both `analyze` and `workflow` write a digest, either tool can continue a thread the
other started (cross-tool continuation) without knowing the other's payload format.
"""

from __future__ import annotations

from typing import Any

import anyio

from exai_mcp.store.threads import Thread, ThreadStore


def render_history(thread: Thread) -> str:
    if not thread.steps:
        return ""
    parts = [f"Earlier in this thread ({thread.tool}{'/' + thread.kind if thread.kind else ''}):"]
    for step in thread.steps:
        digest = step.payload.get("digest") or ""
        parts.append(f"[step {step.number}, {step.tool}]\n{digest}".rstrip())
    return "\n\n".join(parts)


def revision(thread: Thread) -> dict[str, Any]:
    """What identifies the thread's current content, for the call key."""
    return {"thread": thread.id, "steps": [(s.number, s.recorded_at) for s in thread.steps]}


async def load_thread(store: ThreadStore, thread_id: str) -> Thread:
    return await anyio.to_thread.run_sync(store.get, thread_id)
