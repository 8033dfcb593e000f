"""Command-line flags derived from a pydantic model's fields, and the model built back from them.

``seap generate`` and ``python -m flows.batch_generate`` take their sampling flags from ``SamplingParams``
this way, so a field added there is a flag in both (name, type, default, help, choices) with no other edit,
and a value the model refuses is one line naming the flag. ``to_argv`` is the inverse: the flags that give a
model back (the web page's "reproduce with" line).
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Literal

from pydantic import BaseModel, ValidationError

from seap_model.errors import SeapError


class FlagError(SeapError, ValueError):
    """A flag's value that the model's field refuses; the message names the flag."""


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _scalar(annotation) -> tuple[type, tuple | None]:
    """(argparse type, choices) of a field's annotation, ``X | None`` read as ``X``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{annotation}: a flag needs one type besides None")
        return _scalar(rest[0])
    if typing.get_origin(annotation) is Literal:
        return type(args[0]), args
    if annotation in (int, float, str, bool):
        return annotation, None
    raise TypeError(f"{annotation}: no command-line form (int, float, str, bool, a Literal, or one of them | None)")


def add_model_flags(parser, model: type[BaseModel], defaults: BaseModel | None = None) -> None:
    """One flag per field of ``model`` on ``parser`` (a parser or an argument group). A flag not given is
    absent from the namespace, so ``model_from_flags`` keeps the default (``defaults``, else the field's)."""
    for name, info in model.model_fields.items():
        kind, choices = _scalar(info.annotation)
        default = getattr(defaults, name) if defaults is not None else info.default
        how = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind, "choices": choices}
        help_text = f"{info.description or name} (default: {default})".replace("%", "%%")  # argparse formats help
        parser.add_argument(flag_name(name), dest=name, default=argparse.SUPPRESS, help=help_text, **how)


def model_from_flags(args: argparse.Namespace, model: type[BaseModel], defaults: BaseModel | None = None):
    """The model from the flags given in ``args`` over ``defaults``; FlagError naming each refused flag."""
    base = defaults.model_dump() if defaults is not None else {}
    given = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}
    try:
        return model.model_validate({**base, **given})
    except ValidationError as err:
        raise FlagError(
            "; ".join(f"{flag_name(str(e['loc'][0])) if e['loc'] else 'flags'}: {e['msg']}" for e in err.errors())
        ) from None


def to_argv(values: BaseModel) -> list[str]:
    """The flags that give ``values`` back through ``add_model_flags`` (fields that are None are left out)."""
    argv: list[str] = []
    for name in type(values).model_fields:
        value = getattr(values, name)
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag_name(name) if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag_name(name), repr(value) if isinstance(value, float) else str(value)]
    return argv
