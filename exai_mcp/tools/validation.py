"""Turning a pydantic `ValidationError` on a tool's arguments into what the assistant reads.

Each line names the field, what is wrong with the value, and what is allowed: for a misspelt
field, the closest allowed name and the full list, since an assistant can fix its call only
from what the message tells it.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["describe_validation_error"]


def describe_validation_error(tool: str, model: type[BaseModel], exc: ValidationError) -> str:
    """One line per problem, under a heading naming the tool."""
    lines = [f"invalid arguments for {tool}:"]
    for err in exc.errors():
        loc = err["loc"]
        field = ".".join(str(part) for part in loc) or "(arguments)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"- {field}: unknown field{_allowed(model, loc)}")
        elif err["type"] == "missing":
            lines.append(f"- {field}: missing; it is required")
        elif isinstance(err.get("input"), dict):
            lines.append(f"- {field}: {message}")
        else:
            shown = repr(err.get("input"))
            shown = shown if len(shown) <= 80 else shown[:79] + "…"
            lines.append(f"- {field}: {message} (got {shown})")
    return "\n".join(lines)


def _allowed(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """`; did you mean 'text'? allowed: text, files, ...` for the model that holds `loc`."""
    names = _field_names(model, loc[:-1])
    if not names:
        return ""
    import difflib  # only a misspelt call pays for it, not every start

    guess = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    hint = f"; did you mean {guess[0]!r}?" if guess else ";"
    return f"{hint} allowed: {', '.join(names)}"


def _field_names(model: type[BaseModel], path: tuple[int | str, ...]) -> list[str]:
    current: type[BaseModel] | None = model
    for part in path:
        if current is None:
            return []
        if isinstance(part, int):  # an item of a list: the same model holds it
            continue
        field = current.model_fields.get(part)
        current = _model_in(field.annotation) if field is not None else None
    return list(current.model_fields) if current is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `list[Issue]`, `Issue | None` and the like."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
