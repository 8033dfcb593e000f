"""Multi-event scene synthesis (DCASE-style soundscapes) with strong labels.

Each event is a source clip (edges below ``trim_db`` trimmed off; cropped to its loudest
scene-length window if longer than the scene), levelled to unit RMS, given a random gain, and placed
at a random onset. A clip shorter than the reference length recurs, after short pauses and without
overlapping itself, often enough to fill one reference. The mix is peak-normalised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from seap_model.config import SceneParams
from seap_model.data.corpus import Clip
from seap_model.data.manifest import Event
from seap_model.data.references import active_frames, frame_energy


@dataclass(frozen=True, eq=False)  # holds an array: compare by identity
class Source:
    """A corpus clip loaded for mixing: mono float32 at the scene sample rate, silence-trimmed."""

    clip: Clip
    wave: np.ndarray


def trim_silence(wave: np.ndarray, frame: int, trim_db: float) -> np.ndarray:
    """Cut leading and trailing frames more than ``trim_db`` dB below the clip's loudest frame.

    Returns an empty array for digital silence.
    """
    energy = frame_energy(wave, frame)
    active = np.flatnonzero(active_frames(energy, float(energy.max()), trim_db))
    if not len(active):
        return wave[:0]
    return wave[active[0] * frame : (active[-1] + 1) * frame]


def crop_loudest(wave: np.ndarray, samples: int) -> np.ndarray:
    """The ``samples``-long window with the most energy (the whole clip if it is not longer)."""
    if len(wave) <= samples:
        return wave
    energy = np.concatenate([[0.0], np.cumsum(np.square(wave, dtype=np.float64))])
    start = int(np.argmax(energy[samples:] - energy[:-samples]))
    return wave[start : start + samples]


def occurrence_onsets(length: int, scene: int, min_total: int, rng: np.random.Generator) -> list[int]:
    """Random non-overlapping onsets (samples) for an event of ``length`` samples in a ``scene``.

    A single occurrence if ``length >= min_total``; otherwise enough recurrences to total
    ``min_total`` samples (as many as fit), each after a random pause of up to ``length`` samples
    (shrunk to fit the scene). The group starts at a random onset.
    """
    count = 1 if length >= min_total else min(math.ceil(min_total / length), scene // length)
    pauses = rng.uniform(0, length, size=count - 1)
    room = scene - count * length
    if pauses.sum() > room:
        pauses *= room / pauses.sum()
    starts = np.arange(count) * length + np.concatenate([[0], np.cumsum(np.floor(pauses))]).astype(int)
    first = int(rng.integers(0, scene - starts[-1] - length + 1))
    return [first + int(s) for s in starts]


def compose_scene(
    primary: Source,
    pool: Mapping[str, Sequence[Source]],
    params: SceneParams,
    min_seconds: float,
    sample_rate: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[Event]]:
    """Mix ``primary`` with up to ``max_events - 1`` events of other labels drawn from ``pool``.

    ``min_seconds`` is the reference length: shorter clips recur. Returns the peak-normalised mix
    and one Event per occurrence (seconds, rounded to 0.1 us), sorted by onset.
    """
    scene = round(params.seconds * sample_rate)
    sources = [primary]
    while len(sources) < params.max_events and rng.random() < params.second_event_prob:
        present = {s.clip.label for s in sources}
        labels = sorted(label for label in pool if label not in present)
        if not labels:
            break
        choices = pool[labels[rng.integers(len(labels))]]
        sources.append(choices[rng.integers(len(choices))])
    mix = np.zeros(scene, dtype=np.float64)
    events = []
    for source in sources:
        audio = crop_loudest(source.wave, scene).astype(np.float64)
        gain = 10.0 ** (rng.uniform(*params.event_gain_db) / 20.0) / np.sqrt(np.mean(np.square(audio)))
        for onset in occurrence_onsets(len(audio), scene, round(min_seconds * sample_rate), rng):
            mix[onset : onset + len(audio)] += gain * audio
            end = min(onset + len(audio), scene)
            times = round(onset / sample_rate, 7), round(end / sample_rate, 7)
            events.append(Event(source.clip.label, *times, source.clip.file))
    mix *= params.peak / np.abs(mix).max()
    return mix.astype(np.float32), sorted(events, key=lambda e: (e.onset, e.label))
