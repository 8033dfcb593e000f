"""The sound-event corpus: ``metadata.csv`` rows as typed clips, malformed rows as rejects.

An optional ``group`` column names the source a split must keep together (corpus v2: the recording, or for a
SoundFont the instrument preset whose samples are one instrument at several pitches); without it, or where it is
empty, every clip is its own group.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from seap_model.errors import SeapError
from seap_model.rows import BadRow, control_problem, csv_rows, decode, utf8_problem

METADATA = "metadata.csv"
REQUIRED_COLUMNS = ("file", "label", "caption", "duration")
_LABEL = re.compile(r"^[a-z][a-z0-9_]*$")


class CorpusError(SeapError, ValueError):
    """The corpus as a whole is unusable (no metadata, missing column); the message names the file."""


@dataclass(frozen=True)
class Clip:
    """One source recording: ``file`` is relative to the corpus folder, ``path`` is where it lies; ``group`` is what
    a split keeps together (empty: the clip is its own group)."""

    file: str
    path: Path
    label: str
    caption: str
    duration: float
    group: str = ""

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.file)


@dataclass(frozen=True)
class Reject:
    """Something left out of the data set, and why (``rule``); ``clips``/``events``: how many of each it removes."""

    item: str
    reason: str
    rule: str = ""
    clips: int = 0
    events: int = 0


def read_corpus(corpus_dir: str | Path) -> tuple[list[Clip], list[Reject]]:
    """Read ``metadata.csv``; return the valid clips and the rejected rows (item names the line).

    A row is rejected for a wrong field count, an empty or malformed field, a label that is not a
    lower-case identifier, a caption that disagrees with the label's first caption, a non-numeric or
    non-positive duration, a path outside the corpus, a duplicate file, or a missing audio file.
    """
    corpus_dir = Path(corpus_dir)
    path = corpus_dir / METADATA
    if not path.is_file():
        raise CorpusError(f"{path}: metadata file not found")
    clips: list[Clip] = []
    rejects: list[Reject] = []
    captions: dict[str, tuple[str, int]] = {}
    seen: dict[str, int] = {}
    fields, rows = csv_rows(decode(path.read_bytes()))
    missing = [c for c in REQUIRED_COLUMNS if c not in (fields or [])]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing} (header: {fields})")
    for line, row in rows:
        reason = str(row) if isinstance(row, BadRow) else _check_row(row, corpus_dir, captions, seen)
        if reason:
            rejects.append(Reject(f"{METADATA}:{line}", reason, "metadata_row", clips=1))
            continue
        captions.setdefault(row["label"], (row["caption"], line))
        seen[row["file"]] = line
        clips.append(
            Clip(
                row["file"],
                corpus_dir / row["file"],
                row["label"],
                row["caption"],
                float(row["duration"]),
                (row.get("group") or "").strip(),
            )
        )
    return clips, rejects


def _check_row(row: dict, corpus_dir: Path, captions: dict[str, tuple[str, int]], seen: dict[str, int]) -> str:
    """Return why a metadata row is unusable, or "" if it is fine."""
    if None in row:
        return f"too many fields ({len(row) - 1 + len(row[None])}, header has {len(row) - 1})"
    for column in (*REQUIRED_COLUMNS, *(["group"] if row.get("group") else [])):
        if row[column] is None:
            return f"missing field '{column}'"
        row[column] = row[column].strip()
        if not row[column]:
            return f"field '{column}' is empty"
        problem = utf8_problem(row[column])
        if problem:
            return f"field '{column}': {problem}"
    label, caption, file = row["label"], row["caption"], row["file"]
    if problem := control_problem(file):
        return f"field 'file': {file!r} {problem}"
    if not _LABEL.match(label):
        return f"field 'label': {label!r} is not a lower-case identifier"
    if label in captions and captions[label][0] != caption:
        known, line = captions[label]
        return f"field 'caption': {caption!r} differs from {known!r} given for label {label!r} on line {line}"
    try:
        duration = float(row["duration"])
    except ValueError:
        return f"field 'duration': {row['duration']!r} is not a number"
    if not (math.isfinite(duration) and duration > 0):
        return f"field 'duration': {duration} is not a positive number"
    rel = Path(file)
    if rel.is_absolute() or ".." in rel.parts:
        return f"field 'file': {file!r} is not a path inside the corpus"
    if file in seen:
        return f"field 'file': {file!r} is already listed on line {seen[file]}"
    try:
        found = (corpus_dir / rel).is_file()
    except OSError as exc:  # a name longer than the file system allows
        return f"field 'file': {file[:80]!r} cannot be a file ({exc.strerror})"
    if not found:
        return f"field 'file': {file} not found in {corpus_dir}"
    return ""
