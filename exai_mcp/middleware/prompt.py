"""The expert call as a model sees it: the prompt built for the chosen model, the reply capped.

Files are embedded whole, within what the model's context window leaves after the system
prompt, the tool's text, room for the answer and a margin for estimation error; a file that
does not fit is listed with the reason, never cut. Every API key is masked in the reply, as in
errors, before it is cached, stored or returned; then the reply is cut at EXAI_MAX_OUTPUT_TOKENS,
saying so. Built after routing, so a call that moves to another provider is rebuilt for that
model's window.

Before anything is sent, the prompt without its files (which are fitted, or left out) is
estimated: if it cannot fit the model's window less the answer's reserve, the call is refused
at once with the numbers (`PromptTooLarge`), so an oversized text is never paid for.
"""

from __future__ import annotations

import time

from exai_mcp.errors import PromptTooLarge
from exai_mcp.files import FileAccessPolicy, cut_to_tokens, estimate_tokens
from exai_mcp.middleware.call import Answer, Call, Next
from exai_mcp.providers.base import ChatRequest, ChatResult
from exai_mcp.redact import Redactor

# Room kept free for estimation error: the chars/4 estimate runs low on dense code.
ESTIMATE_MARGIN = 0.1


def cap_reply(text: str, max_tokens: int) -> tuple[str, bool]:
    """Cut a reply over the output budget, saying so: never a silent truncation."""
    total = estimate_tokens(text)
    if total <= max_tokens:
        return text, False
    kept = cut_to_tokens(text, max_tokens)
    cut_at = kept.rfind("\n")
    if cut_at > len(kept) // 2:
        kept = kept[:cut_at]
    marker = (
        f"\n\n[exai-mcp: reply cut at about {max_tokens} of {total} estimated tokens "
        "(EXAI_MAX_OUTPUT_TOKENS). To get the rest, ask a narrower question, send fewer files, "
        "or continue this thread with continuation_id and ask for the remaining part.]"
    )
    return kept + marker, True


class BuildPrompt:
    def __init__(
        self, files: FileAccessPolicy, *, max_output_tokens: int, redactor: Redactor
    ) -> None:
        self.files = files
        self.max_output_tokens = max_output_tokens
        self.redactor = redactor

    async def __call__(self, call: Call, call_next: Next) -> Answer:
        ask = call.ask
        assert call.model is not None, "routing comes first"
        window = call.model.context_window
        answer_room = min(self.max_output_tokens, window // 4)
        fixed = (
            estimate_tokens(ask.system) + estimate_tokens(ask.intro) + estimate_tokens(ask.closing)
        )
        if fixed + answer_room > window:
            raise self._too_large(call, fixed, answer_room)
        file_budget = int(window * (1 - ESTIMATE_MARGIN)) - answer_room - fixed
        embedded = (
            await self.files.embed_async(ask.files, max(file_budget, 0)) if ask.files else None
        )
        if ask.files_required and embedded is not None and not embedded.included:
            reasons = "; ".join(f"{path}: {why}" for path, why in embedded.left_out)
            # As too large: `auto` may still find a model with room for them.
            raise PromptTooLarge(
                f"none of the files could be sent to {call.model.label}, and there is no text "
                f"to ask about, so nothing was sent to the provider ({reasons})",
                needed=window + 1,
            )
        files_text = f"{ask.files_heading}{embedded.text}" if embedded and embedded.text else ""
        user = "\n\n".join(part for part in (ask.intro, files_text, ask.closing) if part)
        chat = ChatRequest(
            model=call.model.id, system=ask.system, user=user, temperature=ask.temperature
        )
        started = time.monotonic()
        result: ChatResult = await call_next(call.replace(chat=chat))
        # A provider that echoes a key in its answer must not get it cached, stored or shown.
        text, truncated = cap_reply(self.redactor.redact(result.text), self.max_output_tokens)
        return Answer(
            text=text,
            model=result.model,
            provider=result.provider,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            duration_ms=int((time.monotonic() - started) * 1000),
            truncated=truncated,
            files_included=tuple(embedded.included) if embedded else (),
            files_left_out=tuple(embedded.left_out) if embedded else (),
        )

    def _too_large(self, call: Call, fixed: int, answer_room: int) -> PromptTooLarge:
        assert call.model is not None
        window = call.model.context_window
        files = " (files are left out first, so it is the text itself)" if call.ask.files else ""
        return PromptTooLarge(
            f"{call.model.label} cannot take this prompt: about {fixed:,} tokens estimated"
            f"{files}, over its {window:,}-token context window less {answer_room:,} kept for "
            f"the answer ({window - answer_room:,} tokens); nothing was sent to the provider; "
            f"{call.ask.shorten}, or pick a model with a larger context window "
            "(the `model` argument; EXAI_MAX_OUTPUT_TOKENS sets the answer's reserve)",
            needed=fixed + answer_room,
        )
