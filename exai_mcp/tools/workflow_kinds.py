"""What each kind of `workflow` investigation knows, kept as data.

The `workflow` tool itself is generic: it records steps, asks the assistant to keep working,
and makes one expert model call at the end. Everything that differs between a debug session
and a security audit lives here: the one-line summary shown in the tool description, the
checklist the assistant gets for its next step (which changes as the investigation moves
from mapping the scope, to gathering evidence, to verifying a conclusion), and the system
prompt of the final expert call, which asks for a verdict in a stated JSON shape.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Literal

from exai_mcp.errors import InputError

__all__ = [
    "CONFIDENCE_LEVELS",
    "HIGH_CONFIDENCE",
    "KINDS",
    "KIND_NAMES",
    "Phase",
    "WorkflowKind",
    "get_kind",
]

#: How sure the assistant says it is, lowest first (the `confidence` argument of `workflow`).
CONFIDENCE_LEVELS: tuple[str, ...] = (
    "exploring",
    "low",
    "medium",
    "high",
    "very_high",
    "almost_certain",
    "certain",
)
#: From these levels on, the next step is about verifying, not gathering more evidence.
HIGH_CONFIDENCE: frozenset[str] = frozenset({"high", "very_high", "almost_certain", "certain"})

Phase = Literal["scope", "investigate", "verify"]


@dataclass(frozen=True)
class WorkflowKind:
    """One kind of investigation: its description, checklists and expert prompt.

    `scope_actions`, `investigate_actions` and `verify_actions` are the checklists for the
    three phases; `work` says in a few words what the assistant must do between calls;
    `verdict_keys` are the top-level keys the system prompt asks the expert to return.
    """

    name: str
    title: str
    summary: str
    system_prompt: str
    scope_actions: tuple[str, ...]
    investigate_actions: tuple[str, ...]
    verify_actions: tuple[str, ...]
    work: str
    verdict_keys: tuple[str, ...]

    def phase(self, step_number: int, confidence: str) -> Phase:
        """Which phase the NEXT step belongs to, given the step just reported.

        Step 1 only maps the scope; after that, high confidence means it is time to look
        for counter-evidence rather than pile up more supporting evidence.
        """
        level = _normalise_confidence(confidence)
        if step_number < 1:
            raise InputError(f"step_number must be >= 1, got {step_number}")
        if level in HIGH_CONFIDENCE:
            return "verify"
        if step_number == 1:
            return "scope"
        return "investigate"

    def required_actions(self, step_number: int, confidence: str) -> list[str]:
        """The concrete checklist the assistant must work through before its next call."""
        phase = self.phase(step_number, confidence)
        if phase == "scope":
            return list(self.scope_actions)
        if phase == "investigate":
            return list(self.investigate_actions)
        return list(self.verify_actions)

    def next_steps(self, step_number: int, total_steps: int) -> str:
        """Guidance that makes the assistant do the work itself before calling again."""
        if step_number < 1:
            raise InputError(f"step_number must be >= 1, got {step_number}")
        if step_number >= total_steps:
            return (
                f"This was the final step of the {self.title}. Treat the expert analysis in "
                "this response, if any, as a second opinion, not ground truth: check each "
                "claim against the code you have read, reject what does not hold, and then "
                "act on what does. If it "
                "raised questions you cannot settle, continue with the same continuation_id "
                f"and step_number={step_number + 1}, raising total_steps."
            )
        nxt = step_number + 1
        return (
            f"STOP: do not call workflow again yet. Step {step_number} of {total_steps} of "
            f"the {self.title} is recorded. Before step {nxt}, {self.work} yourself, using "
            "your own tools (read the files, search the code, run commands or tests where "
            "that is safe), working through every item of required_actions. Only then call "
            f"workflow with kind='{self.name}', step_number={nxt}, total_steps={total_steps} "
            "(raise it if the work turned out larger), the same continuation_id, and report "
            "what you actually found, the files you checked, and an honest confidence. "
            "Do not repeat earlier findings; report only what is new or changed."
        )


def _normalise_confidence(confidence: str) -> str:
    level = confidence.strip().lower().replace("-", "_").replace(" ", "_")
    if level not in CONFIDENCE_LEVELS:
        raise InputError(
            f"confidence must be one of {', '.join(CONFIDENCE_LEVELS)}; got {confidence!r}"
        )
    return level


def _prompt(text: str) -> str:
    """Remove the common indentation of a prompt written inline, keeping its structure."""
    return textwrap.dedent(text).strip("\n") + "\n"


DEBUG = WorkflowKind(
    name="debug",
    title="debugging investigation",
    summary="Find the root cause of a bug, crash, hang or wrong result through step-by-step evidence.",
    system_prompt=_prompt(
        """
        You are a senior debugging engineer giving a second opinion on a bug investigation.
        You receive the problem description, the assistant's step-by-step findings and
        hypotheses, and the relevant code. Your task is the root cause, not a rewrite.
        - Reason only from the evidence shown: symptoms, error messages, stack traces, logs
          and the code paths actually read. Never invent files, functions or behaviour.
        - Rank the hypotheses by likelihood; for each give the evidence for and against and
          the cheapest experiment that would confirm or rule it out.
        - State how to reproduce the failure reliably with the smallest input or sequence.
        - Propose the minimal fix for the root cause, not the symptom: no refactoring and no
          unrelated clean-up. Name what the fix could break and the test that pins the bug.
        - If no hypothesis is supported, say so and name the exact information still missing.
        Answer with one JSON object with the keys: "summary" (one paragraph), "root_cause"
        (string, or null when not established), "hypotheses" (list of objects with "name",
        "likelihood" ("high"|"medium"|"low"), "evidence", "how_to_confirm"), "reproduction"
        (list of steps), "minimal_fix" (string, with file:line where known),
        "regression_risks" (list of strings), "missing_information" (list of strings).
        """
    ),
    scope_actions=(
        "Write down the exact symptom: the error message, stack trace or wrong output, and "
        "what was expected instead.",
        "Find where the symptom surfaces in the code (the raising line, the failing test, "
        "the log line) and read that function in full.",
        "Note when the problem started and what changed around then (recent commits, "
        "dependency upgrades, configuration, environment).",
        "Try to reproduce it and record the smallest input or sequence of steps that does.",
        "List two or three candidate hypotheses without committing to one yet.",
    ),
    investigate_actions=(
        "Trace the failing code path backwards from the symptom to where the bad state or "
        "value is first produced; read every function on that path.",
        "For each hypothesis, find evidence that supports it and evidence that contradicts "
        "it; drop hypotheses the code rules out.",
        "Check the inputs, state and assumptions at each boundary: None/empty values, types, "
        "encodings, ordering, time zones, caching, concurrency and error handling.",
        "Add temporary logging or a focused test where reading alone cannot settle a "
        "question, and record what it showed.",
        "Record the files and line numbers that matter and update your confidence honestly.",
    ),
    verify_actions=(
        "Confirm the root cause explains every observed symptom, not just the first one.",
        "Look deliberately for counter-evidence: a case where your cause is present but the "
        "bug does not occur, or the bug occurs without it.",
        "Check that the minimal fix you have in mind removes the cause rather than hiding the "
        "symptom, and what else calls the code you would change.",
        "Name the regression test that would have caught this bug.",
        "Make sure you are not mistaking a second, unrelated problem for the same bug.",
    ),
    work="trace the failing code path, gather evidence for and against each hypothesis and "
    "narrow down the root cause",
    verdict_keys=(
        "summary",
        "root_cause",
        "hypotheses",
        "reproduction",
        "minimal_fix",
        "regression_risks",
        "missing_information",
    ),
)

CODEREVIEW = WorkflowKind(
    name="codereview",
    title="code review",
    summary="Review code for bugs, security, performance and maintainability, with issues ranked by severity.",
    system_prompt=_prompt(
        """
        You are a principal engineer doing a thorough code review as a second opinion.
        You receive the review goal, the assistant's findings so far and the code under review.
        - Look for correctness bugs first: logic errors, unhandled edge cases and error paths,
          resource leaks, race conditions, wrong assumptions about inputs or APIs.
        - Then security (injection, unsafe deserialisation, secrets, missing authorisation),
          performance (needless work in hot paths, N+1 queries, unbounded memory) and
          maintainability (unclear naming, duplication, tight coupling, missing tests).
        - Judge the architecture only where it causes concrete problems, and respect the
          project's existing conventions instead of imposing your own taste.
        - Every issue needs a location (file:line), why it matters, and a concrete fix.
        - Rate severity honestly: "critical" (data loss, security hole, crash in normal use),
          "high", "medium", "low". Do not pad the list with style nits.
        - Mention briefly what is done well, so it is kept.
        Answer with one JSON object with the keys: "summary", "issues" (list of objects with
        "severity", "location", "category", "description", "fix"), "top_priorities" (the three
        most important fixes, in order), "positives" (list of strings), "overall_verdict"
        ("approve"|"approve_with_changes"|"request_changes").
        """
    ),
    scope_actions=(
        "List the files and modules in scope and what each is responsible for.",
        "State the review goal and any focus given (security, performance, a specific "
        "change) and the standards the project follows (linters, style guide, tests).",
        "Identify the entry points and the main data flow through the code under review.",
        "Note the riskiest areas to read first: external input handling, concurrency, "
        "persistence, money/auth-related code, recently changed code.",
    ),
    investigate_actions=(
        "Read each function in scope fully and check its logic, edge cases (empty, None, "
        "boundaries, large inputs) and error handling.",
        "Check how the code is called: do callers respect its contract, and does it respect "
        "the contracts of what it calls?",
        "Look for security issues: untrusted input reaching queries, shells, file paths or "
        "templates; secrets in code or logs; missing authorisation checks.",
        "Look for performance problems: repeated work in loops, blocking calls in async "
        "code, unbounded growth of memory or queries.",
        "Note maintainability problems with a concrete cost: duplication, unclear names, "
        "functions doing several things, missing or weak tests.",
        "Record every issue with file:line and a severity.",
    ),
    verify_actions=(
        "Re-check each issue you found against the code: is it real, reachable in practice, "
        "and correctly rated?",
        "Look for counter-evidence: a guard elsewhere, a caller that never passes the bad "
        "value, a test that already covers the case.",
        "Make sure no file in scope was skimmed rather than read.",
        "Order the issues so the most damaging ones come first and drop pure style nits.",
    ),
    work="read the code in scope and record concrete issues with locations and severities",
    verdict_keys=("summary", "issues", "top_priorities", "positives", "overall_verdict"),
)

SECAUDIT = WorkflowKind(
    name="secaudit",
    title="security audit",
    summary="Audit for vulnerabilities: OWASP Top 10, authn/authz, injection, secrets, dependencies, threat model.",
    system_prompt=_prompt(
        """
        You are an application security engineer giving a second opinion on a security audit.
        You receive the audit scope, the assistant's findings and the relevant code.
        - Start from a threat model: the assets worth protecting, the trust boundaries,
          who the attackers are and what they control.
        - Check the OWASP Top 10 classes: broken access control, cryptographic failures,
          injection (SQL, command, path traversal, template), insecure design, security
          misconfiguration, vulnerable components, authentication failures, software and data
          integrity failures (unsafe deserialisation), logging and monitoring failures, SSRF.
        - Check authentication and authorisation on every entry point, session and token
          handling, secrets in code, configuration and logs, and the dependency versions.
        - For each finding give an exploit scenario an attacker could actually run; rate it
          "critical"|"high"|"medium"|"low" by impact and likelihood; do not report
          theoretical issues the code already prevents.
        - Give a concrete remediation for each finding and the order to fix them in.
        Answer with one JSON object with the keys: "summary", "threat_model" (object with
        "assets", "trust_boundaries", "attackers"), "findings" (list of objects with
        "severity", "owasp_category", "cwe", "location", "exploit_scenario", "remediation"),
        "secure_practices" (what is already done right), "remediation_order" (list),
        "not_assessed" (what was out of scope or not shown).
        """
    ),
    scope_actions=(
        "Map the attack surface: every entry point (HTTP routes, CLI arguments, message "
        "handlers, file or network inputs) and who can reach it.",
        "Identify the assets (credentials, personal data, money, admin functions) and the "
        "trust boundaries between users, services and the outside world.",
        "Find where authentication happens and how identity travels to each handler.",
        "List the dependencies and their versions, and where secrets and configuration are "
        "loaded from.",
    ),
    investigate_actions=(
        "Follow untrusted input from each entry point to SQL queries, shell commands, file "
        "paths, templates, deserialisers and outgoing URLs (injection, path traversal, SSRF).",
        "Check authorisation on every handler: can one user read or change another user's "
        "data (IDOR), can a normal user reach admin functions?",
        "Review authentication and sessions: password storage, token signing and expiry, "
        "rate limiting, logout and reset flows.",
        "Look for secrets hard-coded in code, tests or examples, and for secrets or personal "
        "data written to logs or error messages.",
        "Check cryptography (algorithms, randomness, key handling), security headers, CORS, "
        "TLS verification and debug settings.",
        "Check dependencies for known vulnerable or unmaintained versions.",
    ),
    verify_actions=(
        "For each finding, write the concrete exploit scenario and confirm the vulnerable "
        "path is reachable by an attacker with the access you assumed.",
        "Look for mitigations you may have missed: middleware, framework defaults, input "
        "validation or network controls upstream.",
        "Re-check the OWASP classes you have not yet looked at, so none is skipped.",
        "Rate each finding by impact and likelihood and order the remediations.",
    ),
    work="trace untrusted input and privileges through the code and record concrete, "
    "reachable vulnerabilities",
    verdict_keys=(
        "summary",
        "threat_model",
        "findings",
        "secure_practices",
        "remediation_order",
        "not_assessed",
    ),
)

REFACTOR = WorkflowKind(
    name="refactor",
    title="refactoring analysis",
    summary="Find refactoring opportunities: code smells, decomposition, modernization, organization.",
    system_prompt=_prompt(
        """
        You are a senior engineer planning a refactoring as a second opinion.
        You receive the goal, the assistant's findings and the code. Behaviour must not change.
        - Code smells: long functions, large classes with several responsibilities, duplicated
          logic, deep nesting, long parameter lists, feature envy, primitive obsession, dead
          code, flags that switch a function between unrelated behaviours.
        - Decomposition: where to split modules, classes or functions along responsibilities,
          with the new names and the seams between them.
        - Modernization: language features and standard-library facilities of the project's
          language version that would make the code simpler or safer.
        - Organization: module layout, naming, dependency direction, public versus private API.
        - Prefer a few changes with a large payoff over many cosmetic ones; every change must
          be done in small, safe, separately testable steps. Name the tests that must exist
          before each step, and the risk each change carries for existing callers.
        Answer with one JSON object with the keys: "summary", "opportunities" (list of objects
        with "type" ("codesmells"|"decompose"|"modernize"|"organization"), "severity",
        "location", "description", "proposed_change", "risk"), "order" (the sequence of
        steps), "tests_needed" (list), "leave_alone" (what looks bad but is not worth changing).
        """
    ),
    scope_actions=(
        "List the files, classes and functions in scope with their size and responsibility.",
        "State the refactoring goal (readability, testability, a coming feature, splitting a "
        "module) and any constraint such as a public API that must not change.",
        "Find who depends on the code in scope (callers, imports, subclasses, config).",
        "Check what tests cover the code today, since they are the safety net for changes.",
    ),
    investigate_actions=(
        "Look for code smells: long functions, classes with several responsibilities, "
        "duplicated logic, deep nesting, long parameter lists, dead code.",
        "Find natural seams for decomposition and sketch the new functions, classes or modules "
        "with names and responsibilities.",
        "Note outdated idioms that the project's language version can replace (modernization).",
        "Check the organization: module layout, dependency direction, circular imports, naming.",
        "Record each opportunity with location, expected payoff and risk.",
    ),
    verify_actions=(
        "Check that each proposed change keeps behaviour identical for every caller you found.",
        "Look for reasons the current shape exists (performance, compatibility, a framework "
        "requirement) before calling it a smell.",
        "Order the changes into small steps that each leave the code working and tested.",
        "Drop opportunities whose payoff does not justify their risk.",
    ),
    work="read the code in scope and its callers and record concrete refactoring "
    "opportunities with payoff and risk",
    verdict_keys=("summary", "opportunities", "order", "tests_needed", "leave_alone"),
)

TESTGEN = WorkflowKind(
    name="testgen",
    title="test generation analysis",
    summary="Plan thorough tests for code: behaviours, edge cases, failure paths, matching the project's framework.",
    system_prompt=_prompt(
        """
        You are a test engineer designing tests as a second opinion.
        You receive the code to test, the assistant's analysis and any existing tests.
        - Cover the behaviour that matters: the main paths first, then edge cases (empty,
          None, boundaries, off-by-one, unicode, very large inputs), error paths and
          exceptions, state transitions, and concurrency or ordering where the code has it.
        - Test observable behaviour through the public API, not implementation details.
        - Match the project's test framework, fixtures, naming and layout exactly.
        - Tests must be deterministic and fast: no network, no real clocks or sleeps
          (inject time), no dependence on test order; say which fakes or fixtures to build.
        - Name each test as a sentence describing the behaviour it pins down.
        - Say which cases are not worth testing and why, and what is hard to test as the code
          stands (and the smallest change that would make it testable).
        Answer with one JSON object with the keys: "summary", "framework", "scenarios" (list of
        objects with "name", "category" ("main"|"edge"|"error"|"concurrency"|"regression"),
        "target", "setup", "assertion", "priority"), "fixtures" (list), "not_worth_testing"
        (list), "testability_problems" (list).
        """
    ),
    scope_actions=(
        "List the functions, classes and modules to test and what each promises to do.",
        "Find the existing tests, the test framework, fixtures and naming conventions used.",
        "Identify the dependencies that need fakes (network, clock, file system, database).",
        "Note which behaviour is already covered and where the gaps are.",
    ),
    investigate_actions=(
        "For each target, list the main behaviours, then the edge cases: empty, None, "
        "boundaries, off-by-one, unicode, very large inputs.",
        "Find every error path (raised exceptions, error returns, retries, timeouts) and "
        "how a test could trigger each one.",
        "Look for state, ordering and concurrency the tests must exercise.",
        "Check for hidden inputs (time, randomness, environment variables, global state) "
        "that must be injected for deterministic tests.",
        "Draft test names as sentences with their setup and assertion.",
    ),
    verify_actions=(
        "Check each planned test asserts observable behaviour and would fail if the code "
        "were broken in the way it targets.",
        "Look for important behaviour no planned test covers, especially error paths.",
        "Remove duplicate or low-value tests and tests tied to implementation details.",
        "Confirm every test is deterministic and fits the project's conventions.",
    ),
    work="read the code and its existing tests and work out the concrete scenarios to test",
    verdict_keys=(
        "summary",
        "framework",
        "scenarios",
        "fixtures",
        "not_worth_testing",
        "testability_problems",
    ),
)

THINKDEEP = WorkflowKind(
    name="thinkdeep",
    title="deep-thinking analysis",
    summary="Think hard about a difficult problem or decision: challenge assumptions, weigh alternatives and risks.",
    system_prompt=_prompt(
        """
        You are a senior technical advisor acting as a critical thinking partner.
        You receive a problem or proposed decision, the assistant's reasoning so far and any
        relevant code or context. Your value is in what the assistant has not considered.
        - State whether you agree with the assistant's current conclusion, and why.
        - Challenge the assumptions it rests on; say which ones are unverified and how to
          check them.
        - Offer real alternatives, each with its advantages, costs and when it would be better.
        - Name the risks, edge cases, failure modes and second-order effects (operations,
          maintenance, security, performance, team and user impact).
        - Say what evidence would change the conclusion.
        - Be concrete and grounded in the context given; do not pad with generic advice, and
          say plainly when the assistant's reasoning is already sound.
        Answer with one JSON object with the keys: "summary", "agreement" ("agree"|
        "partially_agree"|"disagree"), "challenged_assumptions" (list), "alternatives" (list of
        objects with "option", "pros", "cons", "best_when"), "risks" (list),
        "recommendation", "open_questions" (list).
        """
    ),
    scope_actions=(
        "State the problem or decision precisely, with the constraints and what a good "
        "outcome looks like.",
        "Write down your current thinking and the assumptions it depends on.",
        "Gather the context that matters: the relevant code, measurements, requirements.",
        "List the alternatives you have already considered and rejected, with the reason.",
    ),
    investigate_actions=(
        "Check your key assumptions against the code, the documentation or measurements.",
        "Develop at least two alternatives seriously, with their costs and benefits.",
        "Think through edge cases, failure modes and long-term consequences of each option.",
        "Note the questions you cannot answer yet and what would answer them.",
    ),
    verify_actions=(
        "Argue against your own conclusion: what is the strongest case for another option?",
        "Look for evidence that contradicts your conclusion, not more evidence for it.",
        "Check the conclusion holds under the constraints stated in step 1.",
        "Name what would make you change your mind.",
    ),
    work="test your assumptions against the code and evidence and develop the alternatives",
    verdict_keys=(
        "summary",
        "agreement",
        "challenged_assumptions",
        "alternatives",
        "risks",
        "recommendation",
        "open_questions",
    ),
)

PLANNER = WorkflowKind(
    name="planner",
    title="planning session",
    summary="Break a large task or migration into ordered phases with dependencies, risks and checkpoints.",
    system_prompt=_prompt(
        """
        You are an experienced technical lead reviewing a plan as a second opinion.
        You receive the goal, the assistant's step-by-step plan and the relevant context.
        - Check the plan reaches the goal: nothing essential missing, nothing unnecessary.
        - Order the work into phases that each deliver something verifiable, with explicit
          dependencies between them; point out what can run in parallel and the critical path.
        - Each phase needs a concrete "done when" criterion a person can check.
        - Name the risks (technical unknowns, migrations, data, compatibility, people) with a
          mitigation, and put the riskiest unknowns early so they are learned cheaply.
        - Say how to roll back or stop safely part-way through.
        - Keep it proportionate: a small task gets a short plan.
        Answer with one JSON object with the keys: "summary", "phases" (list of objects with
        "name", "goal", "tasks", "depends_on", "done_when"), "critical_path" (list of phase
        names), "risks" (list of objects with "risk", "mitigation"), "rollback",
        "open_questions" (list), "first_action" (the very next concrete thing to do).
        """
    ),
    scope_actions=(
        "State the goal, the definition of done and the constraints (deadline, compatibility, "
        "people, budget).",
        "List what exists today that the plan changes or depends on (code, data, services).",
        "Sketch the major pieces of work without ordering them yet.",
        "Note the biggest unknowns that could change the plan.",
    ),
    investigate_actions=(
        "Order the pieces of work into phases with explicit dependencies.",
        "Give each phase a concrete, checkable 'done when' criterion.",
        "Check the code and systems the plan touches for hidden work (migrations, callers, "
        "configuration, documentation).",
        "Identify the risks and a mitigation for each; move the riskiest unknowns early.",
        "Mark what can be done in parallel and what is on the critical path.",
    ),
    verify_actions=(
        "Walk through the plan from start to finish and check every phase's inputs exist "
        "when it starts.",
        "Look for missing work: tests, rollout, monitoring, documentation, clean-up.",
        "Check each phase can be rolled back or paused safely.",
        "Cut anything that does not serve the goal.",
    ),
    work="check the plan against the code and constraints and refine its phases, "
    "dependencies and risks",
    verdict_keys=(
        "summary",
        "phases",
        "critical_path",
        "risks",
        "rollback",
        "open_questions",
        "first_action",
    ),
)

PRECOMMIT = WorkflowKind(
    name="precommit",
    title="pre-commit validation",
    summary="Validate pending git changes before committing: completeness, bugs, leftovers, tests, breaking changes.",
    system_prompt=_prompt(
        """
        You are a meticulous reviewer validating changes before they are committed.
        You receive the intent of the change, the diff (staged and unstaged) and the
        assistant's findings. Judge the diff against the intent.
        - Completeness: does the change do everything the intent requires, in every place
          that needs it (callers, configuration, migrations, documentation, changelog)?
        - New bugs: logic errors, unhandled cases and error paths the diff introduces.
        - Leftovers: debug prints, commented-out code, TODOs, temporary files, unrelated edits.
        - Secrets or personal data added to code, configuration, fixtures or logs.
        - Tests: are the changed behaviours tested, and were tests updated rather than
          weakened to pass?
        - Breaking changes to public APIs, file formats, database schemas or command lines.
        Rate each issue "critical"|"high"|"medium"|"low" with file and line.
        Answer with one JSON object with the keys: "summary", "verdict"
        ("ready"|"fix_first"|"blocked"), "issues" (list of objects with "severity", "file",
        "line", "description", "fix"), "missing_changes" (list), "test_assessment",
        "breaking_changes" (list).
        """
    ),
    scope_actions=(
        "Run git status and git diff (staged and unstaged) and list every changed file.",
        "State the intent of the change: the requirement, bug or feature it is for.",
        "Note changes that look unrelated to the intent.",
        "Identify which changed files are code, tests, configuration, schemas or documentation.",
    ),
    investigate_actions=(
        "Read each hunk of the diff in the context of its whole function and check its logic "
        "and error handling.",
        "Find the callers and dependants of changed code and check they still work.",
        "Look for leftovers: debug output, commented-out code, TODOs, stray files.",
        "Check for secrets, credentials or personal data added anywhere in the diff.",
        "Check tests cover the changed behaviour and were not weakened to pass.",
    ),
    verify_actions=(
        "Compare the diff against the intent once more: is anything required still missing?",
        "Look for breaking changes to public APIs, formats, schemas or command-line options.",
        "Run the tests and linters, or confirm they were run on exactly this diff.",
        "Decide honestly whether the change is ready to commit.",
    ),
    work="read the full diff and the code around it and check it against the intent",
    verdict_keys=(
        "summary",
        "verdict",
        "issues",
        "missing_changes",
        "test_assessment",
        "breaking_changes",
    ),
)

DOCGEN = WorkflowKind(
    name="docgen",
    title="documentation generation",
    summary="Write or fix code documentation: docstrings, parameters, errors, complexity, examples.",
    system_prompt=_prompt(
        """
        You are a technical writer with deep engineering knowledge, documenting code.
        You receive the code, the assistant's analysis and the project's documentation style.
        - Document each module, class and public function: its purpose and why it exists,
          parameters, return value, exceptions raised, side effects and thread-safety where
          relevant, and algorithmic complexity (Big-O) where it is not obvious.
        - Explain intent and non-obvious decisions; do not restate what the code plainly says.
        - Follow the project's docstring style (Google, NumPy, reST, JSDoc, ...) exactly.
        - Add a short usage example only where it clarifies real usage.
        - Do not change behaviour. If the code contradicts its existing documentation, or you
          notice a bug while documenting, report it separately instead of documenting it.
        Answer with one JSON object with the keys: "summary", "style" (the docstring style
        used), "items" (list of objects with "location", "kind" ("module"|"class"|"function"),
        "docstring"), "inaccuracies" (existing docs that are wrong), "bugs_noticed" (list),
        "remaining" (what still needs documenting).
        """
    ),
    scope_actions=(
        "List the files, modules, classes and functions that need documentation.",
        "Find the project's docstring style and an example of good existing documentation.",
        "Note which items have no documentation and which have outdated documentation.",
        "Decide the order: public API first, internals after.",
    ),
    investigate_actions=(
        "For each item, read the code fully: parameters, return values, exceptions raised, "
        "side effects.",
        "Work out the non-obvious why: design decisions, invariants, thread-safety, "
        "complexity of the main algorithms.",
        "Check existing documentation against what the code actually does.",
        "Note any bug you notice instead of documenting the buggy behaviour as intended.",
    ),
    verify_actions=(
        "Re-read each docstring against the code: every parameter, return value and "
        "exception must match.",
        "Check no public item in scope is left undocumented.",
        "Check the documentation follows the project's style consistently.",
        "Remove sentences that only restate the code.",
    ),
    work="read each item to be documented and work out its purpose, contract and "
    "non-obvious behaviour",
    verdict_keys=("summary", "style", "items", "inaccuracies", "bugs_noticed", "remaining"),
)

KINDS: dict[str, WorkflowKind] = {
    k.name: k
    for k in (
        DEBUG,
        CODEREVIEW,
        SECAUDIT,
        REFACTOR,
        TESTGEN,
        THINKDEEP,
        PLANNER,
        PRECOMMIT,
        DOCGEN,
    )
}
KIND_NAMES: tuple[str, ...] = tuple(KINDS)


def get_kind(name: str) -> WorkflowKind:
    """The kind called `name`; InputError listing the allowed kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise InputError(f"kind must be one of {', '.join(KIND_NAMES)}; got {name!r}") from None
