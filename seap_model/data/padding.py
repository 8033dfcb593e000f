"""Optional, not in the paper (``data.references.pad_from_other_clips``): a reference still too short
after the paper's padding borrows later spans of its label from other clips of the same split.

Donor spans are taken from the clips after the reference's own clip, in split order (wrapping round),
and by onset within a clip; the last one is trimmed so the reference is exactly ``seconds`` long. The
energy filter then applies as usual, against the reference's own clip. Splits never mix.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from seap_model.audio import save_audio
from seap_model.config import ReferenceParams
from seap_model.data.manifest import Reference, read_manifest, write_manifest
from seap_model.data.references import SILENT, TOO_SHORT, active_frames, frame_energy

Donor = tuple[str, float, float]  # scene id, onset, offset
_EPS = 1e-5


def borrow_spans(need: float, donors: list[Donor]) -> list[Donor] | None:
    """Donor spans, in order, until they total ``need`` seconds (the last one trimmed); None if too few."""
    taken: list[Donor] = []
    total = 0.0
    for scene_id, onset, offset in donors:
        take = min(offset - onset, need - total)
        taken.append((scene_id, onset, round(onset + take, 7)))
        total += take
        if total >= need - _EPS:
            return taken
    return None


def _read(path: Path, onset: float, offset: float, sample_rate: int) -> np.ndarray:
    return sf.read(str(path), start=round(onset * sample_rate), stop=round(offset * sample_rate), dtype="float32")[0]


def pad_split(
    manifest: Path, short: list[tuple[str, str, int, float]], sample_rate: int, params: ReferenceParams
) -> Counter:
    """Rescue the too-short references ``(scene id, label, index, scene's loudest frame energy)`` of one split.

    Writes the new reference WAVs and rewrites the manifest; returns count changes for the report
    (``padded``, ``references_<rule>``, ``label/<label>``).
    """
    counts: Counter = Counter()
    if not short:
        return counts
    scenes = read_manifest(manifest)
    position = {s.id: i for i, s in enumerate(scenes)}
    donors: dict[str, list[tuple[int, Donor]]] = {}
    for i, scene in enumerate(scenes):
        for e in sorted(scene.events, key=lambda e: e.onset):
            donors.setdefault(e.label, []).append((i, (scene.id, e.onset, e.offset)))
    length, frame = round(params.seconds * sample_rate), max(1, round(params.frame_seconds * sample_rate))
    for scene_id, label, index, loudest in short:
        scene = scenes[position[scene_id]]
        own = sorted((e.onset, e.offset) for e in scene.events if e.label == label)[index:]
        here = position[scene_id]
        ring = sorted((d for d in donors[label] if d[0] != here), key=lambda d: (d[0] - here) % len(scenes))
        borrowed = borrow_spans(params.seconds - sum(b - a for a, b in own), [d for _, d in ring])
        if borrowed is None:
            continue
        parts = [_read(scene.path(scene.audio), a, b, sample_rate) for a, b in own]
        parts += [_read(scene.path(scenes[position[d]].audio), a, b, sample_rate) for d, a, b in borrowed]
        wave = np.concatenate(parts)[:length]
        wave = np.pad(wave, (0, length - len(wave)))
        counts[f"references_{TOO_SHORT}"] -= 1
        if active_frames(frame_energy(wave, frame), loudest, params.active_db).mean() < params.min_active_fraction:
            counts[f"references_{SILENT}"] += 1
            continue
        audio = f"references/{scene.split}/{scene.id}_{label}_{index}.wav"
        save_audio(scene.path(audio), wave, sample_rate)
        scene.references.append(Reference(label, audio, own, borrowed))
        scene.references.sort(key=lambda r: (r.label, r.spans[0][0]))
        counts.update({"references_kept": 1, "padded": 1, f"label/{label}": 1})
    write_manifest(manifest, scenes)
    return counts
