"""Sound-event references cut from a scene with the paper's rule, and their energy filter.

For each label, its occurrences (spans) are sorted by onset; reference i starts with span i and
appends the later spans of that label until ``seconds`` are reached, then is trimmed to exactly
``seconds``; if all later spans together are too short it is dropped (``too_short``). A reference
whose fraction of active frames (within ``active_db`` of the scene's loudest frame) is below
``min_active_fraction`` is dropped too (``silent``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from seap_model.config import ReferenceParams
from seap_model.data.manifest import Event

Span = tuple[float, float]
TOO_SHORT, SILENT = "too_short", "silent"
_EPS = 1e-5  # seconds; spans are rounded to 0.1 us


@dataclass(frozen=True, eq=False)  # holds an array: compare by identity
class Cut:
    """A reference candidate: label, index of its first span, the spans used, and its audio or why it was dropped."""

    label: str
    index: int
    spans: list[Span]
    wave: np.ndarray | None
    dropped: str = ""


def reference_spans(spans: Sequence[Span], seconds: float) -> list[list[Span] | None]:
    """The paper's padding rule on one label's spans: for each span i, the spans of reference i, or None.

    ``spans`` must be sorted by onset. Reference i takes span i, then spans i+1, i+2, ... until their
    total length reaches ``seconds``; the last span used is cut short so the total is exactly ``seconds``.
    """
    out: list[list[Span] | None] = []
    for i in range(len(spans)):
        used: list[Span] = []
        total = 0.0
        for onset, offset in spans[i:]:
            take = min(offset - onset, seconds - total)
            used.append((onset, onset + take))
            total += take
            if total >= seconds - _EPS:
                break
        out.append(used if total >= seconds - _EPS else None)
    return out


def frame_energy(wave: np.ndarray, frame: int) -> np.ndarray:
    """Mean-square energy of consecutive ``frame``-sample frames (the last one zero-padded)."""
    padded = np.pad(wave.astype(np.float64), (0, -len(wave) % frame))
    return np.square(padded).reshape(-1, frame).mean(axis=1)


def active_frames(energy: np.ndarray, loudest: float, active_db: float) -> np.ndarray:
    """Boolean mask of frames within ``active_db`` dB (<= 0) of the ``loudest`` frame energy."""
    return (energy > 0) & (energy >= loudest * 10.0 ** (active_db / 10.0))


def cut_references(scene: np.ndarray, events: Iterable[Event], sample_rate: int, params: ReferenceParams) -> list[Cut]:
    """All reference candidates of a scene, in label then span order; kept ones carry their audio.

    The audio is cut from the scene mix, so other events overlapping a span are audible in it.
    """
    frame = max(1, round(params.frame_seconds * sample_rate))
    loudest = float(frame_energy(scene, frame).max())
    length = round(params.seconds * sample_rate)
    by_label: dict[str, list[Span]] = {}
    for e in events:
        by_label.setdefault(e.label, []).append((e.onset, e.offset))
    cuts = []
    for label in sorted(by_label):
        spans = sorted(by_label[label])
        for index, used in enumerate(reference_spans(spans, params.seconds)):
            if used is None:
                cuts.append(Cut(label, index, [spans[index]], None, TOO_SHORT))
                continue
            parts = [scene[round(a * sample_rate) : round(b * sample_rate)] for a, b in used]
            wave = np.concatenate(parts)[:length]
            wave = np.pad(wave, (0, length - len(wave)))
            active = active_frames(frame_energy(wave, frame), loudest, params.active_db)
            if active.mean() < params.min_active_fraction:
                cuts.append(Cut(label, index, used, None, SILENT))
            else:
                cuts.append(Cut(label, index, used, wave))
    return cuts
