"""`analyze`: one expert look at text and files from a Kimi or GLM model."""

from __future__ import annotations

import time
from typing import Annotated, Literal

import anyio
from mcp_types import ToolAnnotations
from pydantic import Field, model_validator

from exai_mcp.files import estimate_tokens
from exai_mcp.middleware.context import CallContext, Prepared
from exai_mcp.providers.base import ChatRequest
from exai_mcp.services import Services
from exai_mcp.tools.base import AnswerOutput, ToolInput, ToolSpec, Usage, cap_reply
from exai_mcp.tools.history import load_thread, render_history, revision

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
FILE_SHARE_OF_CONTEXT = 0.6  # the rest is left for the question, the history and the answer


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


async def prepare(
    args: AnalyzeInput, services: Services, call: CallContext
) -> Prepared[AnalyzeOutput]:
    model = services.catalog.resolve(args.model, available=services.gateway.available)
    # Check paths now, so a bad one is an error before any provider time is spent.
    files = await services.files.snapshot_async(args.files)
    thread = (
        await load_thread(services.store, args.continuation_id) if args.continuation_id else None
    )
    key = {
        "args": args.model_dump(exclude={"model"}),
        "model": model.label,
        "files": files,
        "thread": revision(thread) if thread else None,
    }

    async def execute(call: CallContext) -> AnalyzeOutput:
        history = render_history(thread) if thread else ""
        question = (args.text or "Analyse these files.").strip()
        budget = int(model.context_window * FILE_SHARE_OF_CONTEXT) - estimate_tokens(
            question + history
        )
        embedded = (
            await services.files.embed_async(args.files, max(budget, 0)) if args.files else None
        )
        user = "\n\n".join(
            part
            for part in (history, f"Question:\n{question}", embedded.text if embedded else "")
            if part
        )
        request = ChatRequest(
            model=model.id,
            system=SYSTEM_PROMPT.format(focus=FOCUS_PROMPTS[args.focus]),
            user=user,
            temperature=args.temperature,
        )
        started = time.monotonic()
        result = await services.gateway.complete(
            request, model, call, budget=services.timeouts.tool
        )
        duration_ms = int((time.monotonic() - started) * 1000)
        text, truncated = cap_reply(result.text, services.settings.max_output_tokens)
        thread_id = await _record(services, thread.id if thread else None, question, args, text)
        return AnalyzeOutput(
            analysis=text,
            model=result.model,
            provider=result.provider,
            usage=Usage(
                prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens
            ),
            duration_ms=duration_ms,
            files_included=embedded.included if embedded else [],
            files_left_out=[f"{p}: {why}" for p, why in embedded.left_out] if embedded else [],
            continuation_id=thread_id,
            truncated=truncated,
        )

    return Prepared(key=key, execute=execute)


async def _record(
    services: Services, thread_id: str | None, question: str, args: AnalyzeInput, answer: str
) -> str:
    """Keep the exchange in a thread so analyze or workflow can continue it later."""
    digest = f"Question ({args.focus}): {question}\nFiles: {', '.join(args.files) or 'none'}\nExpert answer:\n{answer}"
    payload = {"question": question, "files": args.files, "focus": args.focus, "digest": digest}

    def write() -> str:
        store = services.store
        tid = thread_id or store.create("analyze", None).id
        store.append_step(tid, "analyze", payload)
        return tid

    return await anyio.to_thread.run_sync(write)


TOOL = ToolSpec(
    name="analyze",
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
    prepare=prepare,
)
