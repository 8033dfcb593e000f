"""Rows a user hands over (batch jobs, prompt files, collection manifests, corpus metadata), read without crashing.

Files are decoded as UTF-8 with undecodable bytes kept as surrogates (``decode``), so the one row that holds
them is rejected naming the field (``utf8_problem``) and the other rows still count; JSON lines end at ``\n``
only (``lines``). ``json_row`` parses one
JSON line into an object, and anything else (not JSON, nested too deep for the parser, an integer past
Python's digit limit, an array or a number) is a ``BadRow``; ``csv_rows`` walks CSV rows, a row the csv module
cannot split (a field over its size limit) becoming a ``BadRow`` for its line. ``control_problem`` refuses
the control characters (NUL, newlines, ...) that have no place in an id, a path or a key.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


class BadRow(ValueError):
    """A row that cannot be read at all; the message says why."""


def decode(data: bytes) -> str:
    """A user file's text: UTF-8, undecodable bytes kept as lone surrogates (``utf8_problem`` names them)."""
    return data.decode("utf-8", errors="surrogateescape")


def lines(text: str) -> list[str]:
    """A JSONL file's lines, split at ``\n`` only: ``str.splitlines`` also splits at U+2028, U+2029 and U+0085,
    which JSON allows raw inside a string, and would cut such a row in two."""
    return text.split("\n")


def utf8_problem(value: str) -> str | None:
    """Why ``value`` is not text that can be written as UTF-8 (a byte that was not UTF-8 in the file, a lone
    surrogate from a JSON ``\\ud800`` escape), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        if "\udc80" <= char <= "\udcff":
            return f"not valid UTF-8 (byte 0x{ord(char) - 0xDC00:02x} at character {exc.start})"
        return f"not valid Unicode (lone surrogate U+{ord(char):04X} at character {exc.start})"
    return None


def control_problem(value: str) -> str | None:
    """Why ``value`` cannot be an id, a path or a key (a control character), or None."""
    match = _CONTROL.search(value)
    return f"has a control character (U+{ord(match.group()):04X} at character {match.start()})" if match else None


def shown(value: object) -> str:
    """A value as a message quotes it: its repr, cut to 60 characters (a row may hold a megabyte)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def json_row(line: str) -> dict:
    """One JSON line as an object; BadRow naming what is wrong with it otherwise."""
    try:
        row = json.loads(line)
    except RecursionError:
        raise BadRow("not JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, and an integer past Python's digit limit
        raise BadRow(f"not JSON ({getattr(exc, 'msg', None) or str(exc).split(';')[0]})") from None
    if not isinstance(row, dict):
        raise BadRow(f"not a JSON object (got {_JSON_TYPES.get(type(row), 'null')})")
    return row


def csv_rows(text: str) -> tuple[list[str] | None, Iterator[tuple[int, dict | BadRow]]]:
    """(the header, then (line, row) for each row): a row the csv module cannot split is a BadRow for its line
    (the line after the last row read: such rows are single lines)."""
    rows = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = rows.fieldnames
    except csv.Error:  # a header the csv module cannot split: no columns
        fields = None

    def walk() -> Iterator[tuple[int, dict | BadRow]]:
        line = rows.line_num
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                line += 1
                yield line, BadRow(f"not a CSV row ({exc})")
                continue
            line = rows.line_num
            yield line, row

    return fields, walk()
