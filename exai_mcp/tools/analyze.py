"""`analyze`: one expert look at text and files from a Kimi or GLM model."""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated, Literal

import anyio
from mcp_types import ToolAnnotations
from pydantic import Field, model_validator

from exai_mcp.errors import BusyError, ThreadError
from exai_mcp.middleware.call import Answer, ExpertRequest, Plan, call_key
from exai_mcp.services import Services
from exai_mcp.store.threads import NewThread, Thread, ThreadEditor, new_thread_id
from exai_mcp.tools.base import AnswerOutput, ToolInput, ToolSpec, Usage, check_files
from exai_mcp.tools.history import load_thread, render_history, revision

log = logging.getLogger(__name__)

TOOL_NAME = "analyze"

Focus = Literal["general", "architecture", "performance", "security", "quality"]

FOCUS_PROMPTS: dict[str, str] = {
    "general": "Give a balanced expert review: what is right, what is wrong, what to do next.",
    "architecture": "Focus on architecture: boundaries, coupling, data flow, failure modes, "
    "and how the design will age as requirements grow.",
    "performance": "Focus on performance: algorithmic cost, I/O and blocking, memory, "
    "concurrency, and what to measure before changing anything.",
    "security": "Focus on security: untrusted input, injection, authn/authz, secrets, "
    "unsafe defaults, and how an attacker would use each weakness.",
    "quality": "Focus on code quality: correctness, edge cases, error handling, naming, "
    "tests, and what a careful reviewer would ask to change.",
}
SYSTEM_PROMPT = (
    "You are a senior engineer giving a second opinion to another AI assistant, who will "
    "check your claims and act on them. Be concrete: cite file paths and line numbers from "
    "the numbered listings, rank findings by importance, say how sure you are, and do not "
    "invent code you were not shown. {focus}"
)


class AnalyzeInput(ToolInput):
    text: Annotated[
        str | None,
        Field(
            description="The question, or the content to analyse. Required unless files are given."
        ),
    ] = None
    files: Annotated[
        list[str],
        Field(
            default_factory=list,
            description="Absolute paths of text files to include (shown with line numbers).",
        ),
    ]
    focus: Annotated[Focus, Field(description="What to concentrate on.")] = "general"
    model: Annotated[
        str,
        Field(
            description="'auto', a model id or alias (kimi-k2, glm-4.6...), or 'kimi:<id>' / 'glm:<id>'."
        ),
    ] = "auto"
    temperature: Annotated[
        float | None, Field(ge=0, le=1, description="Sampling temperature, 0 to 1.")
    ] = None
    continuation_id: Annotated[
        str | None,
        Field(
            description="Continue a thread started by analyze or workflow (its continuation_id)."
        ),
    ] = None

    @model_validator(mode="after")
    def _needs_something(self) -> AnalyzeInput:
        if not (self.text and self.text.strip()) and not self.files:
            raise ValueError("give 'text' (the question or content), 'files', or both")
        return self


class AnalyzeOutput(AnswerOutput):
    analysis: str = Field(description="The expert's answer.")
    model: str = Field(description="The model that answered.")
    provider: str = Field(description="kimi or glm.")
    usage: Usage
    duration_ms: int = Field(description="Time the expert call took, in milliseconds.")
    files_included: list[str] = Field(default_factory=list)
    files_left_out: list[str] = Field(
        default_factory=list, description="Files that did not fit, with the reason."
    )
    continuation_id: str = Field(description="Pass it back to continue this thread.")
    truncated: bool = Field(
        False, description="True when the reply was cut (EXAI_MAX_OUTPUT_TOKENS)."
    )

    def to_text(self) -> str:
        footer = (
            f"\n\n---\nmodel {self.provider}:{self.model} · {self.duration_ms} ms · "
            f"{self.usage.prompt_tokens}+{self.usage.completion_tokens} tokens"
            f"{' · cached' if self.cached else ''} · continuation_id {self.continuation_id}"
        )
        if self.files_left_out:
            footer += "\nleft out: " + "; ".join(self.files_left_out)
        return self.analysis + footer


async def plan(args: AnalyzeInput, services: Services) -> Plan[AnalyzeOutput]:
    model = services.catalog.resolve(args.model, available=services.pool.available)
    # Check paths now, so a bad one is an error before any provider time is spent.
    files = await check_files(services, files=args.files)
    thread = await load_thread(services, args.continuation_id) if args.continuation_id else None
    asked = {
        "args": args.model_dump(exclude={"model", "continuation_id"}),
        "model": model.label,
        "files": files,
    }
    # What this question is, in any thread: a resent follow-up is found by it, and keyed on
    # the thread as it was before its first copy, so the retry joins or hits the cache.
    question_key = call_key(TOOL_NAME, asked)
    if thread is not None and _asked_last(thread, question_key):
        thread = dataclasses.replace(thread, steps=thread.steps[:-1])
    elif thread is not None and len(thread.steps) >= services.store.max_turns:
        raise services.store.full_error(thread.id)  # before the answer is paid for, not after
    question = (args.text or "Analyse these files.").strip()
    history = render_history(thread) if thread else ""

    async def finish(answer: Answer | None) -> AnalyzeOutput:
        assert answer is not None
        try:
            thread_id = await _record(services, thread, question_key, question, args, answer.text)
        except (ThreadError, BusyError) as exc:
            # The thread expired, filled up or stayed locked during the call: the answer is
            # paid for, so it still arrives, in a new thread of its own.
            log.warning("analyze answer kept in a new thread: %s", exc)
            thread_id = await _record(services, None, question_key, question, args, answer.text)
        return AnalyzeOutput(
            analysis=answer.text,
            model=answer.model,
            provider=answer.provider,
            usage=Usage(
                prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens
            ),
            duration_ms=answer.duration_ms,
            files_included=list(answer.files_included),
            files_left_out=[f"{p}: {why}" for p, why in answer.files_left_out],
            continuation_id=thread_id,
            truncated=answer.truncated,
            cached=answer.cached,
        )

    auto = args.model.strip().lower() == "auto"
    return Plan(
        # The question is already canonicalised and hashed: key on that, not on it again.
        # `auto` apart: its answer may come from another provider than `model` names.
        key={
            "question": question_key,
            "thread": revision(thread) if thread else None,
            "auto": auto,
        },
        ask=ExpertRequest(
            system=SYSTEM_PROMPT.format(focus=FOCUS_PROMPTS[args.focus]),
            intro="\n\n".join(part for part in (history, f"Question:\n{question}") if part),
            files=tuple(args.files),
            temperature=args.temperature,
            budget=services.timeouts.tool,
            files_required=not (args.text and args.text.strip()),
        ),
        model=model,
        auto=auto,
        finish=finish,
    )


def _asked_last(thread: Thread, question_key: str) -> bool:
    last = thread.last_step
    return last is not None and last.payload.get("question_key") == question_key


async def _record(
    services: Services,
    thread: Thread | None,
    question_key: str,
    question: str,
    args: AnalyzeInput,
    answer: str,
) -> str:
    """Keep the exchange in this caller's thread, so analyze or workflow can continue it.

    A caller without a continuation_id gets a thread of its own, even when its answer was
    shared or cached; it is written after the reply (store/pending.py). A resent follow-up is
    stored once: the check and the write are one transaction.
    """
    digest = f"Question ({args.focus}): {question}\nFiles: {', '.join(args.files) or 'none'}\nExpert answer:\n{answer}"
    payload = {
        "question": question,
        "files": args.files,
        "focus": args.focus,
        "question_key": question_key,
        "digest": digest,
    }

    def append_once(editor: ThreadEditor) -> str:
        if not _asked_last(editor.thread, question_key):
            editor.append(TOOL_NAME, payload)
        return editor.thread.id

    if thread is None:  # a new thread: the reply need not wait for its write
        thread_id = new_thread_id()
        await services.writes.write_new(NewThread(thread_id, TOOL_NAME, None, append_once))
        return thread_id
    return await anyio.to_thread.run_sync(services.store.edit, thread.id, append_once)


TOOL = ToolSpec(
    name=TOOL_NAME,
    title="Expert analysis",
    description=(
        "Ask a Kimi or GLM expert model for a second opinion on a question, text or files "
        "(absolute paths; shown with line numbers). Use for reviews of a design, a diff, a bug "
        "theory or a piece of code when one answer is enough; use `workflow` for multi-step "
        "investigations. Returns a continuation_id to ask follow-ups."
    ),
    input_model=AnalyzeInput,
    output_model=AnalyzeOutput,
    annotations=ToolAnnotations(
        title="Expert analysis",
        read_only_hint=True,
        destructive_hint=False,
        idempotent_hint=True,
        open_world_hint=True,
    ),
    plan=plan,
)
