"""Threads as a model sees them: every tool stores a prompt-ready `digest` with each step.

Because both `analyze` and `workflow` write a digest, either tool can continue a thread the
other started (cross-tool continuation) without knowing the other's payload format.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio

from exai_mcp.services import Services
from exai_mcp.store.threads import Thread


def render_history(thread: Thread, heading: str | None = None) -> str:
    """Every step's digest in order, under `heading` (by default, what the thread is)."""
    if not thread.steps:
        return ""
    kind = f"/{thread.kind}" if thread.kind else ""
    parts = [heading or f"Earlier in this thread ({thread.tool}{kind}):"]
    for step in thread.steps:
        digest = step.payload.get("digest") or ""
        parts.append(f"[step {step.number}, {step.tool}]\n{digest}".rstrip())
    return "\n\n".join(parts)


def revision(thread: Thread, *, before: int | None = None) -> dict[str, Any]:
    """What the thread holds, for a call key: content only, so a client's retry matches.

    `before` limits it to the steps numbered below it: a tool whose call records step N keys on
    what came before N, so the retried call finds the same key.
    """
    steps = [s for s in thread.steps if before is None or s.number < before]
    content = json.dumps([(s.number, s.payload.get("digest", "")) for s in steps])
    return {"thread": thread.id, "content": hashlib.sha256(content.encode()).hexdigest()}


async def load_thread(services: Services, thread_id: str) -> Thread:
    """The thread `thread_id`, once a write of it still running after its reply has ended."""
    await services.writes.settled(thread_id)
    return await anyio.to_thread.run_sync(services.store.get, thread_id)
