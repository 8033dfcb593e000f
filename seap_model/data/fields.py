"""One row's fields, each checked on its own: a bad value raises RowError naming the field and the rule it broke.

The collection readers (``collection.py``) call these for every JSONL line and CSV row, so a malformed row is
recorded as a Reject with its file:line and field, and the rest of the collection is still read.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath

from seap_model.rows import control_problem, shown, utf8_problem

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RowError(ValueError):
    """One row (or one of its fields) is unusable; the message names the field, ``rule`` the check."""

    def __init__(self, message: str, rule: str = "bad_row"):
        super().__init__(message)
        self.rule = rule


def label_id(text: str) -> str:
    """A label as a lower-case identifier: runs of other characters become ``_`` ("Dog bark" -> "dog_bark")."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")
    if not slug:
        raise RowError(f"field 'label': {text!r} has no letters or digits")
    return slug if slug[0].isalpha() else f"l_{slug}"


def check_utf8(name: str, value: str) -> str:
    problem = utf8_problem(value)
    if problem:
        raise RowError(f"field '{name}': {problem}", "not_utf8")
    return value


def string_field(name: str, value: object) -> str:
    """An optional text field of a JSON row ("" when absent)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"field '{name}': {shown(value)} is not a string")
    return check_utf8(name, value.strip())


def clip_key(value: object) -> str:
    if value is not None and not isinstance(value, str):
        raise RowError(f"field 'clip': {shown(value)} is not a string")
    if not value or not value.strip():
        raise RowError("field 'clip': missing or empty")
    key = check_utf8("clip", value.strip())
    if control_problem(key):
        raise RowError(f"field 'clip': {key!r} {control_problem(key)}")
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or "\\" in key:
        raise RowError(f"field 'clip': {key!r} is not a relative path inside the collection")
    return key


def seconds(name: str, value: object) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise RowError(f"field '{name}': {shown(value)} is not a number", "bad_span") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise RowError(f"field '{name}': {shown(value)} is not a finite, non-negative number of seconds", "bad_span")
    return seconds


def span(onset: object, offset: object) -> tuple[float, float]:
    start, end = seconds("onset", onset), seconds("offset", offset)
    if start > end:
        raise RowError(f"onset {start} s is after offset {end} s", "bad_span")
    if start == end:
        raise RowError(f"empty span (onset = offset = {start} s)", "bad_span")
    return start, end


def optional_sha256(value: object) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _SHA256.match(value.strip().lower()):
        raise RowError(f"field 'sha256': {value!r} is not 64 hex digits")
    return value.strip().lower()


def optional_size(value: object) -> int | None:
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        size = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise RowError(f"field 'size': {shown(value)} is not a whole number of bytes") from None
    if size < 0:
        raise RowError(f"field 'size': {size} is negative")
    return size
