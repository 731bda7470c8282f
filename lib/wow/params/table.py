"""``wow params``: every parameter of a set with its type, default, allowed values and meaning.

Allowed values come from where the schema checks them: a ``Literal`` type, the task registry (:func:`wow.tasks.names`),
the trainers and schedulers of :mod:`wow.schema`; model names are listed by ``wow models``.

Example::

    from wow.params import table
    print(table.describe())
"""

from __future__ import annotations

import types
import typing

from wow import schema
from wow.params import RunParams

#: Allowed values of parameters that the schema checks against a registry rather than a type.
_REGISTRY = {
    "trainers": lambda: schema.TRAINERS,
    "lr_schedulers": lambda: schema.SCHEDULERS,
}
_MODELS = ("generators", "judges", "policy_model")


def _literals(annotation) -> list:
    """The values of every ``Literal`` inside ``annotation`` (``list[Literal[...]] | None`` included), in order."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    out = []
    for arg in typing.get_args(annotation):
        out += [v for v in _literals(arg) if v not in out]
    return out


def type_name(annotation) -> str:
    """A short name of a field's type: ``list``, ``int | None``, ``str``."""
    if typing.get_origin(annotation) is typing.Literal:
        return type(typing.get_args(annotation)[0]).__name__
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " | ".join(dict.fromkeys(type_name(a) for a in typing.get_args(annotation)))
    origin = typing.get_origin(annotation)
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def allowed_values(name: str) -> str:
    """The values a parameter accepts, as ``wow params`` prints them ('' where any value of its type goes)."""
    if name == "tasks":
        from wow import tasks

        return "one or more of " + ", ".join(tasks.names())
    if name in _MODELS:
        return "model names (wow models lists them)"
    if _REGISTRY.get(name):
        return "one or more of " + ", ".join(_REGISTRY[name]())
    values = _literals(RunParams.model_fields[name].annotation)
    return "one of " + ", ".join(map(str, values)) if values else ""


def describe() -> str:
    """A table of every parameter: name, type, default, meaning, and on a second line the allowed values."""
    lines = []
    for name, field in RunParams.model_fields.items():
        lines.append(f"{name:20} {type_name(field.annotation):16} {field.default!r:28} {field.description}")
        allowed = allowed_values(name)
        if allowed:
            lines.append(f"{'':20} {'':16} {'':28} allowed: {allowed}")
    return "\n".join(lines)
