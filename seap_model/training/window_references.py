"""References drawn from outside a training window (``finetune.reference_window: outside``).

A scene's reference of label L is cut from the spans of L's events, so it usually holds the very samples a
training window covering that event denoises: the model can learn to paste the reference instead of "sounds
like". An outside reference is the label's audio in the scene *outside* the window when there is enough of it,
and otherwise a copy of the reference re-cropped, circularly shifted and re-gained, so that no frame lines up
with the window's. Either way it is tiled to the reference length (the encoder and the cache expect one length).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import torch

from seap_model.data.manifest import Scene
from seap_model.training.dataset import Window

MIN_FRACTION = 0.5  # an outside span shorter than this share of the reference length is not used on its own
CROP = (0.5, 0.9)  # re-crop: this share of the reference is kept
GAIN_DB = 6.0  # re-gain: uniform in +-this
SILENT_RMS = 1e-4


@dataclass(frozen=True)
class OutsideReference:
    wave: torch.Tensor
    kind: str  # "other_span" or "augmented"


def _tile(wave: torch.Tensor, samples: int) -> torch.Tensor:
    reps = -(-samples // max(1, wave.numel()))
    return wave.repeat(reps)[:samples]


def outside_spans(scene: Scene, label: str, start: float, end: float) -> list[tuple[float, float]]:
    """The parts of ``label``'s event spans in ``scene`` that lie outside [start, end) (seconds)."""
    spans = []
    for e in scene.events:
        if e.label != label:
            continue
        if e.onset < start:
            spans.append((e.onset, min(e.offset, start)))
        if e.offset > end:
            spans.append((max(e.onset, end), e.offset))
    return [(a, b) for a, b in spans if b > a]


def outside_reference(
    scene: Scene,
    scene_wave: torch.Tensor,
    label: str,
    window: tuple[float, float],
    reference_wave: torch.Tensor,
    sample_rate: int,
    rng: np.random.Generator,
) -> OutsideReference:
    """A reference of ``label`` that shares no samples with ``window`` (seconds) of the scene (see module doc)."""
    samples = reference_wave.numel()
    pieces = [scene_wave[int(a * sample_rate) : int(b * sample_rate)] for a, b in outside_spans(scene, label, *window)]
    audio = torch.cat(pieces) if pieces else torch.zeros(0)
    if audio.numel() >= MIN_FRACTION * samples and float(audio.pow(2).mean().sqrt()) > SILENT_RMS:
        return OutsideReference(_tile(audio, samples), "other_span")
    keep = int(samples * rng.uniform(*CROP))
    first = int(rng.integers(0, samples - keep + 1))
    crop = reference_wave[first : first + keep]
    crop = torch.roll(crop, int(rng.integers(0, keep)))
    gain = float(10 ** (rng.uniform(-GAIN_DB, GAIN_DB) / 20))
    return OutsideReference(_tile(crop * gain, samples).clamp(-1.0, 1.0), "augmented")


def outside_windows(
    scene: Scene,
    scene_wave: torch.Tensor,
    windows: list[Window],
    first_ref: int,
    ref_waves: list[torch.Tensor],
    col_seconds: float,
    width: int,
    sample_rate: int,
    rng: np.random.Generator,
    kinds: Counter,
) -> list[Window]:
    """``windows`` of one scene with each reference replaced by an outside one, appended to ``ref_waves``
    (the scene's own references are ``ref_waves[first_ref:]``); ``kinds`` counts which kind each one was."""
    out = []
    for w in windows:
        span = (w.start * col_seconds, (w.start + width) * col_seconds)
        ids = []
        for ref in w.references:
            label = scene.references[ref - first_ref].label
            got = outside_reference(scene, scene_wave, label, span, ref_waves[ref], sample_rate, rng)
            kinds[got.kind] += 1
            ref_waves.append(got.wave)
            ids.append(len(ref_waves) - 1)
        out.append(replace(w, references=tuple(ids)))
    return out
