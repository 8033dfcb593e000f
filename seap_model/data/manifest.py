"""SERST manifests: one scene per JSONL line with strong labels and reference clips.

Schema (paths relative to the manifest's folder)::

    {"id": "train_0007", "split": "train", "audio": "audio/train/train_0007.wav", "duration": 4.16,
     "caption": "a dog barking and a bell ringing",
     "events": [{"label": "dog", "onset": 0.52, "offset": 1.31, "source": "audio/dog_01.flac"}, ...],
     "references": [{"label": "dog", "audio": "references/train/train_0007_dog_0.wav",
                     "spans": [[0.52, 1.31], [2.0, 2.71]]}, ...]}

A reference may also list ``"borrowed": [[scene id, onset, offset], ...]`` (only with
``data.references.pad_from_other_clips``): spans of other scenes of the split appended to its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError

from seap_model.errors import SeapError

SPLITS = ("train", "val", "test")
LABELS_FILE = "labels.json"
_EPS = 1e-6


class ManifestError(SeapError, ValueError):
    """A manifest or labels file that cannot be read; the message names file:line and field."""


_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Event:
    """One occurrence of a sound event in a scene (a strong label), in seconds."""

    __pydantic_config__ = _STRICT
    label: str
    onset: float
    offset: float
    source: str

    def __post_init__(self) -> None:
        if not 0 <= self.onset < self.offset:
            raise ValueError(f"needs 0 <= onset < offset, got onset {self.onset}, offset {self.offset}")


@dataclass(frozen=True)
class Reference:
    """A reference clip cut from a scene: the spans (seconds) of one label concatenated.

    ``borrowed`` (only with ``data.references.pad_from_other_clips``): spans of the same label in other
    scenes of the split, ``[scene id, onset, offset]``, appended after ``spans``.
    """

    __pydantic_config__ = _STRICT
    label: str
    audio: str
    spans: list[tuple[float, float]]
    borrowed: list[tuple[str, float, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"label": self.label, "audio": self.audio, "spans": [list(s) for s in self.spans]}
        return out | ({"borrowed": [list(b) for b in self.borrowed]} if self.borrowed else {})


@dataclass
class Scene:
    """A scene and its strong labels; ``root`` is the manifest's folder (see ``path``)."""

    __pydantic_config__ = _STRICT
    id: str
    split: Literal["train", "val", "test"]
    audio: str
    duration: float
    caption: str
    events: list[Event]
    references: list[Reference]
    root: Path = field(default=Path("."), init=False, compare=False, repr=False)

    def path(self, relative: str) -> Path:
        """Resolve a path from this scene's row (``audio`` or a reference's) against the manifest folder."""
        return self.root / relative

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "split": self.split,
            "audio": self.audio,
            "duration": self.duration,
            "caption": self.caption,
            "events": [
                {"label": e.label, "onset": e.onset, "offset": e.offset, "source": e.source} for e in self.events
            ],
            "references": [r.to_dict() for r in self.references],
        }


_SCENE = TypeAdapter(Scene)


def _where(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<row>"


def read_manifest(path: str | Path) -> list[Scene]:
    """Read a JSONL manifest; raise ManifestError naming file:line and field for a malformed row or an id that
    repeats."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    scenes, seen = [], {}
    for lineno, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            scene = _SCENE.validate_json(line)
        except ValidationError as err:
            first = err.errors()[0]
            msg = "unknown field" if first["type"] == "unexpected_keyword_argument" else first["msg"]
            raise ManifestError(f"{path}:{lineno}: field '{_where(first['loc'])}': {msg}") from None
        if scene.id in seen:
            raise ManifestError(f"{path}:{lineno}: field 'id': {scene.id!r} repeats line {seen[scene.id]}")
        seen[scene.id] = lineno
        scene.root = path.parent
        scenes.append(scene)
    return scenes


def write_manifest(path: str | Path, scenes: Iterable[Scene]) -> None:
    """Write scenes as JSONL, one per line, in the given order (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in scenes))
    tmp.replace(path)


def write_labels(serst_dir: str | Path, captions: dict[str, str]) -> None:
    labels = sorted(captions)
    data = {"labels": labels, "captions": {label: captions[label] for label in labels}}
    (Path(serst_dir) / LABELS_FILE).write_text(json.dumps(data, indent=2) + "\n")


def read_labels(serst_dir: str | Path) -> dict[str, str]:
    """Read ``labels.json``: label -> caption, in sorted label order."""
    path = Path(serst_dir) / LABELS_FILE
    try:
        data = json.loads(path.read_bytes())
        labels, captions = data["labels"], data["captions"]
    except FileNotFoundError:
        raise ManifestError(f"{path}: labels file not found") from None
    except (RecursionError, ValueError, KeyError, TypeError) as exc:  # ValueError: not JSON, not UTF-8
        raise ManifestError(f"{path}: expected {{'labels': [...], 'captions': {{...}}}} ({exc})") from None
    if not isinstance(labels, list) or not isinstance(captions, dict):
        raise ManifestError(f"{path}: 'labels' must be a list and 'captions' a mapping")
    missing = [label for label in labels if not isinstance(captions.get(label), str)]
    if missing:
        raise ManifestError(f"{path}: field 'captions' has no caption for {missing}")
    return {label: captions[label] for label in sorted(labels)}


def caption_events(events: Iterable[Event], captions: dict[str, str]) -> tuple[str, list[str]]:
    """Caption a set of event occurrences from the label captions.

    Labels are ordered by first onset. A label whose first onset is at or after the end of every
    occurrence of the labels before it follows them ("X, then Y"); otherwise it co-occurs ("X and Y").
    Returns the caption and the labels in caption order; ("", []) for no events.
    """
    spans: dict[str, tuple[float, float]] = {}
    for e in events:
        first, last = spans.get(e.label, (e.onset, e.offset))
        spans[e.label] = (min(first, e.onset), max(last, e.offset))
    order = sorted(spans, key=lambda label: (spans[label][0], label))
    missing = [label for label in order if label not in captions]
    if missing:
        raise KeyError(f"no caption for label(s) {missing}")
    groups: list[list[str]] = []
    end = float("-inf")
    for label in order:
        first, last = spans[label]
        if groups and first < end - _EPS:
            groups[-1].append(captions[label])
        else:
            groups.append([captions[label]])
        end = max(end, last)
    return ", then ".join(" and ".join(g) for g in groups), order


def window_caption(
    scene: Scene, start: float, end: float, captions: dict[str, str], min_overlap: float = 0.25
) -> tuple[str, list[str]]:
    """Caption and labels for the crop [start, end) of a scene.

    An occurrence counts if it overlaps the crop by at least min(min_overlap, its length) seconds;
    counted occurrences are clipped to the crop before applying the "and"/"then" rule of caption_events.
    """
    inside = []
    for e in scene.events:
        lo, hi = max(start, e.onset), min(end, e.offset)
        if hi > lo and hi - lo >= min(min_overlap, e.offset - e.onset) - _EPS:
            inside.append(Event(e.label, lo, hi, e.source))
    return caption_events(inside, captions)
