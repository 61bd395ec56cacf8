"""The per-kind knowledge of the workflow tool: summaries, checklists and expert prompts."""

from __future__ import annotations

import pytest

from exai_mcp.errors import InputError
from exai_mcp.tools.workflow_kinds import (
    CONFIDENCE_LEVELS,
    KIND_NAMES,
    KINDS,
    WorkflowKind,
    get_kind,
)

EXPECTED = (
    "debug",
    "codereview",
    "secaudit",
    "refactor",
    "testgen",
    "thinkdeep",
    "planner",
    "precommit",
    "docgen",
)


def all_actions(kind: WorkflowKind) -> str:
    return " ".join(kind.scope_actions + kind.investigate_actions + kind.verify_actions).lower()


def test_all_nine_kinds_are_present_in_a_stable_order() -> None:
    assert KIND_NAMES == EXPECTED
    assert tuple(KINDS) == EXPECTED
    assert all(KINDS[name].name == name for name in EXPECTED)


def test_summaries_are_one_short_line() -> None:
    for kind in KINDS.values():
        assert 20 < len(kind.summary) < 120, kind.name
        assert "\n" not in kind.summary


def test_system_prompts_are_distinct_and_between_8_and_20_lines() -> None:
    prompts = [k.system_prompt for k in KINDS.values()]
    assert len(set(prompts)) == len(prompts)
    for kind in KINDS.values():
        lines = kind.system_prompt.strip().splitlines()
        assert 8 <= len(lines) <= 20, (kind.name, len(lines))
        assert not kind.system_prompt.startswith(" ")


def test_every_prompt_asks_for_json_with_the_keys_it_declares() -> None:
    for kind in KINDS.values():
        assert "JSON object" in kind.system_prompt, kind.name
        assert kind.verdict_keys[0] == "summary"
        for key in kind.verdict_keys:
            assert f'"{key}"' in kind.system_prompt, (kind.name, key)


def test_checklists_are_distinct_between_kinds_and_phases() -> None:
    for phase in ("scope_actions", "investigate_actions", "verify_actions"):
        lists = [getattr(k, phase) for k in KINDS.values()]
        assert len(set(lists)) == len(lists), phase
    for kind in KINDS.values():
        assert kind.scope_actions and kind.investigate_actions and kind.verify_actions
        phases = {kind.scope_actions, kind.investigate_actions, kind.verify_actions}
        assert len(phases) == 3, kind.name


def test_secaudit_checks_security_things_that_refactor_does_not() -> None:
    sec = KINDS["secaudit"]
    ref = KINDS["refactor"]
    for term in ("owasp", "injection", "authoris", "secrets", "threat model", "ssrf"):
        assert term in sec.system_prompt.lower(), term
        assert term not in ref.system_prompt.lower(), term
    for term in ("untrusted input", "attack surface", "exploit"):
        assert term in all_actions(sec), term
        assert term not in all_actions(ref), term


def test_refactor_and_debug_each_have_their_own_focus() -> None:
    ref = KINDS["refactor"].system_prompt.lower()
    for term in ("code smells", "decomposition", "modernization", "organization"):
        assert term in ref, term
        assert term not in KINDS["secaudit"].system_prompt.lower(), term
    debug = KINDS["debug"].system_prompt.lower()
    for term in ("root cause", "reproduce", "hypotheses", "minimal fix"):
        assert term in debug, term
    assert "reproduce" in all_actions(KINDS["debug"])
    assert "diff" in all_actions(KINDS["precommit"])
    assert "docstring" in all_actions(KINDS["docgen"])
    assert "edge cases" in all_actions(KINDS["testgen"])


def test_required_actions_change_from_first_step_to_high_confidence() -> None:
    for kind in KINDS.values():
        first = kind.required_actions(1, "exploring")
        middle = kind.required_actions(3, "medium")
        sure = kind.required_actions(3, "high")
        assert first == list(kind.scope_actions)
        assert middle == list(kind.investigate_actions)
        assert sure == list(kind.verify_actions)
        assert first != sure and middle != sure and first != middle


def test_every_high_confidence_level_moves_to_verification() -> None:
    kind = KINDS["debug"]
    for level in ("high", "very_high", "almost_certain", "certain"):
        assert kind.phase(2, level) == "verify"
    for level in ("exploring", "low", "medium"):
        assert kind.phase(2, level) == "investigate"
    assert kind.phase(1, "low") == "scope"
    assert kind.phase(1, "certain") == "verify"
    assert kind.phase(2, "Very High") == "verify"


def test_an_unknown_confidence_is_refused_listing_the_allowed_values() -> None:
    with pytest.raises(InputError) as info:
        KINDS["debug"].required_actions(2, "pretty sure")
    for level in CONFIDENCE_LEVELS:
        assert level in str(info.value)


def test_next_steps_tell_the_assistant_to_work_before_calling_again() -> None:
    for kind in KINDS.values():
        text = kind.next_steps(2, 5)
        assert "do not call workflow again yet" in text
        assert "step_number=3" in text
        assert f"kind='{kind.name}'" in text
        assert "continuation_id" in text
        assert kind.work in text


def test_next_steps_at_the_final_step_stop_the_loop() -> None:
    text = KINDS["codereview"].next_steps(4, 4)
    assert "final step" in text
    assert "do not call workflow again yet" not in text


def test_step_numbers_below_one_are_refused() -> None:
    with pytest.raises(InputError, match="step_number"):
        KINDS["planner"].next_steps(0, 3)
    with pytest.raises(InputError, match="step_number"):
        KINDS["planner"].required_actions(0, "low")


def test_get_kind_names_the_allowed_kinds_for_a_typo() -> None:
    assert get_kind("secaudit") is KINDS["secaudit"]
    with pytest.raises(InputError, match="debug, codereview"):
        get_kind("security")


def test_kinds_are_frozen() -> None:
    with pytest.raises(AttributeError):
        KINDS["debug"].summary = "x"  # type: ignore[misc]
