"""Which provider answers: the plan's model, or for `auto`, the next one when it cannot serve.

A provider cannot serve a call when its key is rejected, its breaker is open, or its attempts
ran out on failures (timeouts, 5xx, unreachable) while the call still has time. A client that
asked for `auto` then gets its answer from the next available provider, in the order the
registry gives; a client that named a model gets that model's error. A request the provider
refused as malformed (`BadRequest`) is not moved: another provider would refuse it too.
An `auto` prompt too large for the model's window (`PromptTooLarge`, found before any request)
moves to the next available provider whose model has room, if one has.
"""

from __future__ import annotations

import logging

from exai_mcp.errors import BadRequest, PromptTooLarge, ProviderError
from exai_mcp.middleware.call import Answer, Call, Next
from exai_mcp.middleware.pool import ProviderPool
from exai_mcp.providers.catalog import ModelCatalog, ResolvedModel

log = logging.getLogger(__name__)


class RouteToProvider:
    def __init__(self, pool: ProviderPool, catalog: ModelCatalog, *, min_attempt: float) -> None:
        self.pool = pool
        self.catalog = catalog
        self.min_attempt = min_attempt

    async def __call__(self, call: Call, call_next: Next) -> Answer:
        plan = call.plan
        assert plan is not None and plan.model is not None, "the tool layer comes first"
        model = plan.model
        tried: list[str] = []
        while True:
            try:
                answer: Answer = await call_next(call.replace(model=model))
                return answer
            except PromptTooLarge as exc:
                tried.append(model.provider)
                roomier = self._fallback(tried) if plan.auto else None
                if roomier is None or roomier.context_window < exc.needed:
                    raise
                call.report(f"the prompt does not fit {model.label}; asking {roomier.label}")
                model = roomier
            except ProviderError as exc:
                tried.append(model.provider)
                fallback = self._fallback(tried) if plan.auto else None
                if (
                    fallback is None
                    or isinstance(exc, BadRequest)
                    or call.deadline.remaining() < self.min_attempt
                ):
                    raise
                log.warning(
                    "%s cannot serve %s: %s; asking %s", model.label, call.tool, exc, fallback.label
                )
                call.report(
                    f"{model.label} cannot serve this call ({exc.kind}); asking {fallback.label}"
                )
                model = fallback

    def _fallback(self, tried: list[str]) -> ResolvedModel | None:
        model = self.catalog.resolve(
            "auto", available=lambda p: p not in tried and self.pool.available(p)
        )
        if model.provider in tried or not self.pool.available(model.provider):
            return None
        return model
