"""`workflow`: a multi-step investigation the assistant does itself, with one expert verdict at the end.

Each call reports one step. Intermediate steps (`next_step_required: true`) are recorded in the
thread store and answered locally with the kind's checklist for the next step: no provider call.
The final step makes one expert call whose prompt holds every step of the thread and the
`relevant_files` of all steps, embedded within a budget derived from the model's context window.

Guarantees:
- All state lives in the thread store under the `continuation_id`; nothing is kept on the tool
  or in module globals, so concurrent investigations never see each other's steps, and a thread
  survives a server restart.
- Each step is placed inside one store transaction. A resent identical step is kept once; a
  step number the investigation holds, sent with new content, replaces it and drops the later
  steps (backtracking); a lower number it does not hold yet (steps sent at once, arriving out
  of order) is inserted before the later ones, and nothing is dropped.
- A one-step investigation that asks the expert is stored only with its verdict, in a thread
  of the caller's own: callers sharing one expert call never share a thread, and a client's
  retry leaves no half-done thread behind.
- Paths are checked when the step that names them arrives.
- A retried final step joins the running expert call or is served from the result cache.
- Each step's payload carries a prompt-ready `digest` (see `tools/history.py`), updated with the
  expert verdict, so `analyze` can continue a workflow thread and the reverse.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, Literal

import anyio
from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from exai_mcp.errors import BusyError, InputError, ThreadError
from exai_mcp.middleware.call import Answer, ExpertRequest, Plan
from exai_mcp.services import Services
from exai_mcp.store.threads import NewThread, Step, Thread, ThreadEditor, new_thread_id
from exai_mcp.tools.base import (
    AnswerOutput,
    ToolInput,
    ToolSpec,
    Usage,
    check_files,
    compact_schema,
)
from exai_mcp.tools.history import render_history, revision
from exai_mcp.tools.workflow_kinds import KINDS, WorkflowKind, get_kind

log = logging.getLogger("exai_mcp.workflow")

Kind = Literal[
    "debug",
    "codereview",
    "secaudit",
    "refactor",
    "testgen",
    "thinkdeep",
    "planner",
    "precommit",
    "docgen",
]
Confidence = Literal["exploring", "low", "medium", "high", "very_high", "almost_certain", "certain"]
Severity = Literal["critical", "high", "medium", "low"]
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low")

TOOL_NAME = "workflow"
# Kept short for tools/list; the full summaries are in workflow_kinds.py and the README.
KIND_HINTS = {
    "debug": "root cause",
    "codereview": "",
    "secaudit": "security",
    "refactor": "",
    "testgen": "test plan",
    "thinkdeep": "hard decision",
    "planner": "phased plan",
    "precommit": "git changes",
    "docgen": "docs",
}
# The payload keys that are the step itself; the rest (digest, expert verdict) derive from them.
DERIVED_KEYS = frozenset({"digest", "expert"})


COMPACT = ConfigDict(json_schema_extra=compact_schema)


class Issue(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=compact_schema)

    severity: Severity
    description: str
    location: str = Field("", description="file:line or symbol")


class WorkflowInput(ToolInput):
    model_config = COMPACT

    kind: Kind
    step: Annotated[str, Field(description="What this step investigated, or plans to.")]
    step_number: Annotated[
        int, Field(ge=1, le=10_000, description="1 starts a thread; going lower backtracks.")
    ]
    total_steps: Annotated[
        int, Field(ge=1, le=10_000, description="Estimated steps in all; may grow.")
    ]
    next_step_required: Annotated[
        bool, Field(description="false on the final step (expert verdict).")
    ]
    findings: Annotated[str, Field(description="What this step found: evidence, not plans.")]
    files_checked: Annotated[
        list[str], Field(default_factory=list, description="Absolute paths of files examined.")
    ]
    relevant_files: Annotated[
        list[str],
        Field(
            default_factory=list,
            description="Absolute paths that matter; the expert reads them at the end.",
        ),
    ]
    relevant_context: Annotated[
        list[str], Field(default_factory=list, description="Key symbols, e.g. Class.method.")
    ]
    issues_found: Annotated[list[Issue], Field(default_factory=list)]
    confidence: Annotated[Confidence, Field(description="How sure you are now.")] = "exploring"
    hypothesis: Annotated[str | None, Field(description="Your current theory.")] = None
    continuation_id: Annotated[
        str | None,
        Field(description="From step 1's reply (or an analyze thread)."),
    ] = None
    use_expert: Annotated[bool, Field(description="false: finish without the expert call.")] = True
    model: Annotated[str, Field(description="Expert model, as for analyze.")] = "auto"
    temperature: Annotated[float | None, Field(ge=0, le=1)] = None


class ThreadSummary(BaseModel):
    # Counts over the whole thread; `issues` by severity.
    model_config = COMPACT

    steps: int
    relevant_files: int
    files_checked: int
    issues: dict[str, int]
    confidence: str


class TokenUsage(Usage):
    model_config = COMPACT


class ExpertAnalysis(BaseModel):
    text: str
    json_verdict: dict[str, Any] | None = Field(None, alias="json")  # when it answered in JSON
    model: str
    provider: str
    usage: TokenUsage
    duration_ms: int
    truncated: bool = False  # cut at EXAI_MAX_OUTPUT_TOKENS

    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, json_schema_extra=compact_schema
    )


class WorkflowOutput(AnswerOutput):
    model_config = COMPACT

    status: str = Field(description="pause_for_<kind> or complete.")
    continuation_id: str
    kind: str
    step_number: int
    total_steps: int
    required_actions: list[str]
    next_steps: str
    thread: ThreadSummary
    expert_used: bool = False
    expert_note: str = ""  # why no expert was called
    expert_analysis: ExpertAnalysis | None = None
    # On completion: everything the thread's steps reported, and what the expert saw.
    relevant_files: list[str] = Field(default_factory=list)
    issues: list[str] = Field(default_factory=list, description="[severity] what (where)")
    files_included: list[str] = Field(default_factory=list)
    files_left_out: list[str] = Field(default_factory=list, description="With the reason.")

    def to_text(self) -> str:
        t = self.thread
        counts = ", ".join(f"{n} {sev}" for sev, n in t.issues.items() if n) or "none"
        summary = (
            f"Thread: {_count(t.steps, 'step')}, {_count(t.relevant_files, 'relevant file')}, "
            f"{_count(t.files_checked, 'file')} checked, issues: {counts}, "
            f"confidence: {t.confidence}."
        )
        head = (
            f"{self.status}: step {self.step_number} of {self.total_steps} "
            f"({self.kind}) · continuation_id {self.continuation_id}"
        )
        if self.status != "complete":
            actions = "\n".join(f"- {a}" for a in self.required_actions)
            return (
                f"{head}\n\n{self.next_steps}\n\nRequired actions before the next step:\n"
                f"{actions}\n\n{summary}"
            )
        parts = [head]
        if self.expert_analysis is not None:
            e = self.expert_analysis
            parts.append(f"Expert analysis:\n{e.text}")
            parts.append(
                f"model {e.provider}:{e.model} · {e.duration_ms} ms · "
                f"{e.usage.prompt_tokens}+{e.usage.completion_tokens} tokens"
                + (" · cached" if self.cached else "")
            )
        else:
            parts.append(f"No expert analysis: {self.expert_note}")
        parts.append(summary)
        if self.issues:
            parts.append("Issues:\n" + "\n".join(f"- {line}" for line in self.issues))
        if self.relevant_files:
            parts.append("Relevant files: " + ", ".join(self.relevant_files))
        if self.files_left_out:
            parts.append("Left out of the expert prompt: " + "; ".join(self.files_left_out))
        parts.append(self.next_steps)
        return "\n\n".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --------------------------------------------------------------------------- the thread


def _step_payload(args: WorkflowInput) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "kind": args.kind,
        "workflow_step": args.step_number,
        "total_steps": args.total_steps,
        "next_step_required": args.next_step_required,
        "step": args.step,
        "findings": args.findings,
        "hypothesis": args.hypothesis,
        "confidence": args.confidence,
        "files_checked": args.files_checked,
        "relevant_files": args.relevant_files,
        "relevant_context": args.relevant_context,
        "issues": [i.model_dump() for i in args.issues_found],
    }
    payload["digest"] = _digest(payload)
    return payload


def _digest(p: dict[str, Any]) -> str:
    """The step as a model reads it: everything the assistant reported, plus any verdict."""
    lines = [
        f"{KINDS[p['kind']].title}, step {p['workflow_step']} of {p['total_steps']}: {p['step']}",
        f"Findings: {p['findings']}",
    ]
    if p.get("hypothesis"):
        lines.append(f"Hypothesis: {p['hypothesis']}")
    lines.append(f"Confidence: {p['confidence']}")
    lines.extend(f"Issue {_issue_line(i)}" for i in p["issues"])
    if p["relevant_context"]:
        lines.append("Relevant context: " + ", ".join(p["relevant_context"]))
    if p["relevant_files"]:
        lines.append("Relevant files: " + ", ".join(p["relevant_files"]))
    if p["files_checked"]:
        lines.append("Files checked: " + ", ".join(p["files_checked"]))
    expert = p.get("expert")
    if expert:
        lines.append(f"Expert verdict ({expert['provider']}:{expert['model']}):\n{expert['text']}")
    return "\n".join(lines)


def _reported(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in DERIVED_KEYS}


Placement = Literal["resend", "replace", "insert", "append"]


def _slot(thread: Thread, args: WorkflowInput, payload: dict[str, Any]) -> tuple[int, Placement]:
    """Where this workflow step goes in the thread, and how.

    A thread may hold other tools' steps (an analyze exchange) and earlier investigations, so
    workflow step N is not always thread step N. The current investigation runs from the
    latest workflow step 1. Step 1 after a finished investigation, or of another kind, starts
    a new one after the last step. Within the investigation:
    - a step identical to one it holds under the same number is a client's retry: kept as is;
    - a step number it holds, with new content, replaces that step and drops the later ones
      (backtracking);
    - a step number it does not hold goes before the first higher one (steps sent at once
      arrive in any order: none is dropped), or at the end.
    """
    after_last = thread.last_step_number + 1
    workflow_steps = [s for s in thread.steps if s.tool == TOOL_NAME]
    starts = [i for i, s in enumerate(workflow_steps) if s.payload.get("workflow_step") == 1]
    run = workflow_steps[starts[-1] :] if starts else []
    if not run and args.step_number != 1:
        # Without its step 1 there is no investigation to place the step in, resend or
        # backtrack: every copy would be appended, and a retried final step paid again.
        raise InputError(
            f"continuation_id '{thread.id}' holds no workflow investigation yet; start one "
            "on it with step_number=1"
        )
    if not run:
        return after_last, "append"
    run_kind = run[0].payload.get("kind")
    finished = run[-1].payload.get("next_step_required") is False
    same_number = [s for s in run if s.payload.get("workflow_step") == args.step_number]
    if any(_reported(s.payload) == _reported(payload) for s in same_number):
        return same_number[0].number, "resend"
    if args.step_number == 1 and (finished or run_kind != args.kind):
        return after_last, "append"
    if run_kind != args.kind:
        raise InputError(
            f"continuation_id '{thread.id}' holds a {run_kind} workflow; send "
            f"kind='{run_kind}', or start a {args.kind} workflow on this thread with step_number=1"
        )
    if same_number:
        return same_number[0].number, "replace"
    for s in run:
        if s.payload.get("workflow_step", 0) > args.step_number:
            return s.number, "insert"
    return after_last, "append"


def _record(services: Services, args: WorkflowInput, payload: dict[str, Any]) -> tuple[Thread, int]:
    """Create or load the thread and store the step; runs in a worker thread (sqlite).

    The slot is chosen inside the write transaction, so steps sent at once never overwrite
    each other: each sees the thread as the previous one left it.
    """

    def store_step(editor: ThreadEditor) -> tuple[Thread, int]:
        slot, placement = _slot(editor.thread, args, payload)
        if placement == "insert":
            editor.insert(slot, TOOL_NAME, payload)
        elif placement != "resend":  # a resend keeps the stored copy and any verdict on it
            editor.record(slot, TOOL_NAME, payload)
        return editor.thread, slot

    if args.continuation_id is None:
        return services.store.create_and_edit(TOOL_NAME, args.kind, store_step)
    return services.store.edit(args.continuation_id, store_step)


def _attach_verdict(services: Services, thread_id: str, slot: int, payload: dict) -> None:
    """Store the verdict on its step, unless the step was replaced meanwhile (one transaction)."""

    reported = _reported(payload)

    def attach(editor: ThreadEditor) -> None:
        # Steps sent at once and inserted before it meanwhile have moved it further along.
        current = next(
            (
                s
                for s in editor.thread.steps
                if s.number >= slot and s.tool == TOOL_NAME and _reported(s.payload) == reported
            ),
            None,
        )
        if current is not None:
            editor.update(current.number, payload)

    try:
        services.store.edit(thread_id, attach)
    except (ThreadError, BusyError) as exc:  # expired, full or locked: the answer still arrives
        log.warning("could not store the workflow verdict: %s", exc)


def _workflow_payloads(thread: Thread) -> list[dict[str, Any]]:
    return [s.payload for s in thread.steps if s.tool == TOOL_NAME]


def _unique(items: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _all_relevant_files(thread: Thread) -> list[str]:
    return _unique([f for p in _workflow_payloads(thread) for f in p.get("relevant_files", [])])


def _issue_line(issue: dict[str, Any]) -> str:
    where = f" ({issue['location']})" if issue.get("location") else ""
    return f"[{issue['severity']}] {issue['description']}{where}"


def _all_issues(thread: Thread) -> list[dict[str, Any]]:
    """Every issue the thread's steps reported, once each, most severe first."""
    issues = _unique([i for p in _workflow_payloads(thread) for i in p.get("issues", [])])
    return sorted(issues, key=lambda i: SEVERITIES.index(i["severity"]))


def _summary(thread: Thread, confidence: str) -> ThreadSummary:
    payloads = _workflow_payloads(thread)
    counts = Counter(i["severity"] for i in _all_issues(thread))
    return ThreadSummary(
        steps=len(thread.steps),
        relevant_files=len(_all_relevant_files(thread)),
        files_checked=len(_unique([f for p in payloads for f in p.get("files_checked", [])])),
        issues={sev: counts.get(sev, 0) for sev in SEVERITIES},
        confidence=confidence,
    )


# --------------------------------------------------------------------------- the expert call


def _render_thread(thread: Thread, kind: WorkflowKind) -> str:
    return render_history(
        thread,
        f"An AI assistant carried out this {kind.title} step by step and asks for your verdict. "
        "Its steps, in order (other tools' exchanges in the same thread included):",
    )


def parse_json_verdict(text: str) -> dict[str, Any] | None:
    """The JSON object in a reply: the whole reply, a ```json fence, or the outermost braces."""
    candidates = [text.strip()]
    candidates += re.findall(r"```(?:json)?\s*\n(.*?)```", text, flags=re.DOTALL)
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# --------------------------------------------------------------------------- the tool


async def plan(args: WorkflowInput, services: Services) -> Plan[WorkflowOutput]:
    kind = get_kind(args.kind)
    if args.continuation_id is None and args.step_number != 1:
        raise InputError(
            f"step_number {args.step_number} needs the continuation_id returned by step 1; "
            "start a new workflow with step_number=1"
        )
    # A bad path is an error at the step that names it, before anything is recorded.
    await check_files(
        services, relevant_files=args.relevant_files, files_checked=args.files_checked
    )
    if args.model.strip().lower() != "auto":  # an explicit model is checked at every step
        services.catalog.resolve(args.model, available=services.pool.available)

    payload = _step_payload(args)
    final = not args.next_step_required
    skip = (
        None
        if not final
        else "use_expert is false"
        if not args.use_expert
        else "confidence is 'certain'"
        if args.confidence == "certain"
        else None
    )
    # A one-step investigation that asks the expert keeps nothing until it has its verdict,
    # so a client's retry of it leaves no orphan thread behind: each caller's thread is
    # created when its answer arrives (see `finish`).
    draft = final and skip is None and args.continuation_id is None
    if draft:
        thread, slot = _draft_thread(payload), 1
    else:
        if args.continuation_id is not None:
            await services.writes.settled(args.continuation_id)
        thread, slot = await anyio.to_thread.run_sync(_record, services, args, payload)
    total = args.total_steps if final else max(args.total_steps, args.step_number + 1)
    base = dict(
        kind=args.kind,
        step_number=args.step_number,
        total_steps=max(total, args.step_number),
        required_actions=kind.required_actions(args.step_number, args.confidence),
        next_steps=kind.next_steps(args.step_number, args.step_number if final else total),
        thread=_summary(thread, args.confidence),
    )
    if not final:
        pause = WorkflowOutput(status=f"pause_for_{args.kind}", continuation_id=thread.id, **base)
        return Plan(finish=lambda _answer: _ready(pause))

    complete = dict(
        base,
        status="complete",
        # After the verdict, the assistant's job is to check it: the kind's verify checklist.
        required_actions=list(kind.verify_actions),
        relevant_files=_all_relevant_files(thread),
        issues=[_issue_line(i) for i in _all_issues(thread)],
    )
    if skip:
        local = WorkflowOutput(
            **complete,
            continuation_id=thread.id,
            expert_note=f"{skip}, so the workflow completed locally without a provider call.",
        )
        return Plan(finish=lambda _answer: _ready(local))

    model = services.catalog.resolve(args.model, available=services.pool.available)
    key = {
        "args": args.model_dump(mode="json", exclude={"model"}),
        "model": model.label,
        "auto": args.model.strip().lower() == "auto",  # may be answered by another provider
        "files": await services.files.snapshot_async(complete["relevant_files"], strict=False),
        "thread": None if draft else revision(thread, before=slot),
    }

    async def finish(answer: Answer | None) -> WorkflowOutput:
        assert answer is not None
        verdict = dict(payload)
        verdict["expert"] = {
            "text": answer.text,
            "model": answer.model,
            "provider": answer.provider,
        }
        verdict["digest"] = _digest(verdict)
        if draft:  # a new thread: the reply need not wait for its write
            thread_id = new_thread_id()
            await services.writes.write_new(
                NewThread(thread_id, TOOL_NAME, args.kind, _first_step_with(verdict))
            )
        else:
            thread_id = thread.id
            await anyio.to_thread.run_sync(_attach_verdict, services, thread_id, slot, verdict)
        return WorkflowOutput(
            **complete,
            continuation_id=thread_id,
            expert_used=True,
            expert_analysis=ExpertAnalysis(
                text=answer.text,
                json_verdict=parse_json_verdict(answer.text),
                model=answer.model,
                provider=answer.provider,
                usage=TokenUsage(
                    prompt_tokens=answer.prompt_tokens,
                    completion_tokens=answer.completion_tokens,
                ),
                duration_ms=answer.duration_ms,
                truncated=answer.truncated,
            ),
            files_included=list(answer.files_included),
            files_left_out=[f"{p}: {why}" for p, why in answer.files_left_out],
            cached=answer.cached,
        )

    return Plan(
        key=key,
        ask=ExpertRequest(
            system=kind.system_prompt,
            intro=_render_thread(thread, kind),
            files=tuple(complete["relevant_files"]),
            files_heading="Relevant files, with line numbers:\n",
            closing=(
                f"Give your verdict on this {kind.title} now, as the one JSON object your "
                "instructions describe."
            ),
            temperature=args.temperature,
            budget=services.timeouts.expert,
            budget_setting="EXPERT_ANALYSIS_TIMEOUT_SECS",
            shorten="send fewer relevant_files, resend an earlier step_number with shorter "
            "findings (that step and the later ones are replaced), or start a new thread "
            "without continuation_id that sums up the findings so far",
        ),
        model=model,
        auto=args.model.strip().lower() == "auto",
        finish=finish,
    )


def _draft_thread(payload: dict[str, Any]) -> Thread:
    """The thread a one-step investigation will have, before it is stored."""
    now = time.time()
    step = Step(number=1, tool=TOOL_NAME, payload=payload, recorded_at=now)
    return Thread(
        id="", tool=TOOL_NAME, kind=payload["kind"], created_at=now, updated_at=now, steps=(step,)
    )


def _first_step_with(verdict: dict[str, Any]) -> Callable[[ThreadEditor], object]:
    """A one-step investigation's thread, written once its verdict is in."""
    return lambda editor: editor.record(1, TOOL_NAME, verdict)


async def _ready(output: WorkflowOutput) -> WorkflowOutput:
    return output


def _description() -> str:
    return (
        "A multi-step investigation YOU do with your own tools, ending in one expert verdict. "
        "Call once per step with what you found; the reply gives the next step's checklist and "
        "a continuation_id. Only the final step (next_step_required=false) calls the expert, "
        "with every step and the relevant_files. Kinds: "
        + ", ".join(f"{name} ({hint})" if hint else name for name, hint in KIND_HINTS.items())
        + "."
    )


TOOL = ToolSpec(
    name=TOOL_NAME,
    title="Expert-checked investigation",
    description=_description(),
    input_model=WorkflowInput,
    output_model=WorkflowOutput,
    annotations=ToolAnnotations(
        title="Expert-checked investigation",
        read_only_hint=False,  # it records steps in the thread store
        destructive_hint=False,
        idempotent_hint=True,
        open_world_hint=True,
    ),
    plan=plan,
)
