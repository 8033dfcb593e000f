"""SERST from a collection whose clips already carry strong labels: each clip is a scene.

Per clip (in a worker process): decode, mix to mono, resample to ``audio.sample_rate``; reject
unreadable, truncated, empty, non-finite and all-zero audio; reject events that start after the
audio ends (or after ``clip_seconds``) and clip offsets to it; cut or zero-pad the clip to
``clip_seconds``; cut every label's references by the paper's rule (``references.cut_references``:
pad with later spans of the label, trim to the reference length, drop if too short or near-silent).
All kept references of a clip go to the manifest, so training can draw one at random.

Clips are split by group (``split.split_keys``, stratified by each group's dominant label) before any
audio is read; results stream into the manifests in order, so memory does not grow with the audio.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from seap_model.audio import resample, save_audio
from seap_model.config import Params, ReferenceParams
from seap_model.data.collection import CollectionSource, StrongClip, read_collection
from seap_model.data.corpus import CorpusError, Reject
from seap_model.data.manifest import SPLITS, Event, Reference, Scene, caption_events, write_labels
from seap_model.data.padding import pad_split
from seap_model.data.parallel import ordered_map, worker_count
from seap_model.data.references import SILENT, TOO_SHORT, cut_references, frame_energy
from seap_model.data.report import REJECTS, write_report
from seap_model.data.split import split_keys
from seap_model.progress import progress

log = logging.getLogger(__name__)
KEPT = "kept"
SHOWN_REJECTS = 10  # rejects also written to the log; all of them are in rejects.csv
TRUNCATION_TOLERANCE = 0.01  # decoded frames may fall this far short of the header's (estimated) count


@dataclass(frozen=True)
class ClipTask:
    """Everything a worker needs to turn one clip into a scene."""

    clip: StrongClip
    scene_id: str
    split: str
    raw_dir: Path
    out_dir: Path
    sample_rate: int
    clip_seconds: float
    references: ReferenceParams
    captions: dict[str, str]


@dataclass
class ClipOutcome:
    """A worker's result: the scene (None if the clip was rejected), rejects, and counts for the report."""

    split: str
    scene_id: str
    scene: Scene | None
    rejects: list[Reject]
    seconds: float = 0.0
    cuts: Counter = field(default_factory=Counter)
    events_clipped: int = 0
    short: list[tuple[str, int]] = field(default_factory=list)
    loudest: float = 0.0


class ClipRejected(Exception):
    """The whole clip is unusable: ``rule`` names the check."""

    def __init__(self, reason: str, rule: str):
        super().__init__(reason)
        self.rule = rule


def decode(path: Path, sample_rate: int, max_seconds: float | None = None) -> tuple[np.ndarray, float]:
    """Mono float32 audio at ``sample_rate`` and the file's length in seconds at its own rate. With
    ``max_seconds``, only that much and a second more is decoded: an hour-long file costs no more memory than
    the clip cut from it.

    A file that decodes to fewer frames than its header declares (of those asked for) is rejected as truncated;
    a truncated WAV cannot be told (libsndfile reads the frames that are there), so it is kept at its real length.
    """
    try:
        info = sf.info(str(path))
        declared = info.frames
        want = declared if max_seconds is None else min(declared, math.ceil((max_seconds + 1) * info.samplerate))
        data, sr = sf.read(str(path), frames=want, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise ClipRejected(f"cannot read audio ({exc.__class__.__name__}: {exc})", "unreadable") from None
    if data.shape[0] == 0:
        raise ClipRejected("audio is empty (0 samples)", "empty")
    if data.shape[0] < (1 - TRUNCATION_TOLERANCE) * want:
        raise ClipRejected(f"truncated: the header declares {declared} frames, {data.shape[0]} decoded", "truncated")
    if not np.isfinite(data).all():
        raise ClipRejected("audio contains NaN or infinite samples", "non_finite")
    if not data.any():
        raise ClipRejected("audio is digital silence (all samples zero)", "silent_clip")
    wave = resample(torch.from_numpy(data.mean(axis=1)), sr, sample_rate).numpy()
    return wave, (declared if want < declared else data.shape[0]) / sr


def clip_events(clip: StrongClip, end: float, clip_seconds: float) -> tuple[list[Event], list[Reject], int]:
    """The clip's events inside ``min(end, clip_seconds)``, offsets clipped to it; rejects for the rest."""
    limit = min(end, clip_seconds)
    events, rejects, clipped = [], [], 0
    for e in clip.events:
        if e.onset >= limit:
            what = f"the audio ends ({end:.3f} s)" if end <= clip_seconds else f"clip_seconds ({clip_seconds} s)"
            rejects.append(Reject(e.item, f"span {e.onset}-{e.offset} s starts after {what}", "after_end", 0, 1))
            continue
        clipped += e.offset > limit
        events.append(Event(e.label, round(e.onset, 7), round(min(e.offset, limit), 7), clip.key))
    return sorted(events, key=lambda e: (e.onset, e.label, e.offset)), rejects, clipped


def segment_clip(task: ClipTask) -> ClipOutcome:
    """Turn one clip into a scene WAV, its references and its manifest row (runs in a worker)."""
    clip, sr = task.clip, task.sample_rate
    path = task.raw_dir / clip.key
    try:
        if not path.is_file():
            raise ClipRejected("audio file not found (not downloaded?)", "missing_file")
        wave, seconds = decode(path, sr, task.clip_seconds)
    except ClipRejected as exc:
        return ClipOutcome(task.split, task.scene_id, None, [Reject(clip.key, str(exc), exc.rule, 1, len(clip.events))])
    events, rejects, clipped = clip_events(clip, len(wave) / sr, task.clip_seconds)
    outcome = ClipOutcome(task.split, task.scene_id, None, rejects, seconds, events_clipped=clipped)
    if not events:
        reason = "no strong label inside the audio (all its events were rejected)"
        rejects.append(Reject(clip.key, reason, "no_events", 1, 0))
        return outcome
    samples = round(task.clip_seconds * sr)
    wave = np.pad(wave[:samples], (0, max(0, samples - len(wave))))
    audio = f"audio/{task.split}/{task.scene_id}.wav"
    save_audio(task.out_dir / audio, wave, sr)
    references = []
    for cut in cut_references(wave, events, sr, task.references):
        outcome.cuts[cut.dropped or KEPT] += 1
        if cut.dropped == TOO_SHORT:
            outcome.short.append((cut.label, cut.index))
        if cut.dropped:
            continue
        ref_audio = f"references/{task.split}/{task.scene_id}_{cut.label}_{cut.index}.wav"
        save_audio(task.out_dir / ref_audio, cut.wave, sr)
        references.append(Reference(cut.label, ref_audio, [(round(a, 7), round(b, 7)) for a, b in cut.spans]))
    frame = max(1, round(task.references.frame_seconds * sr))
    outcome.loudest = float(frame_energy(wave, frame).max())
    caption = clip.caption or caption_events(events, task.captions)[0]
    outcome.scene = Scene(task.scene_id, task.split, audio, round(samples / sr, 4), caption, events, references)
    return outcome


def assign_splits(clips: list[StrongClip], params: Params) -> dict[str, list[StrongClip]]:
    """Split by group (all clips of a group together), stratified by the group's dominant label.

    The dominant label is the one with the most labelled seconds in the group (ties: alphabetical).
    Each split's clips are sorted by key.
    """
    seconds: dict[str, Counter] = {}
    for clip in clips:
        for e in clip.events:
            seconds.setdefault(clip.group, Counter())[e.label] += e.offset - e.onset
    strata = {group: min(c, key=lambda label: (-c[label], label)) for group, c in seconds.items()}
    assigned = split_keys(strata, params.data.split, params.seed, unit="groups of clips")
    ordered = sorted(clips, key=lambda c: c.key)
    return {split: [c for c in ordered if assigned[c.group] == split] for split in SPLITS}


def _tasks(splits: dict[str, list[StrongClip]], params: Params, out: Path, captions: dict[str, str]) -> Iterator:
    source = params.data.source
    for split in SPLITS:
        for k, clip in enumerate(splits[split]):
            yield ClipTask(
                clip,
                f"{split}_{k:04d}",
                split,
                Path(params.data.raw_dir),
                out,
                params.audio.sample_rate,
                source.clip_seconds,
                params.data.references,
                {e.label: captions[e.label] for e in clip.events},
            )


class _Tally:
    """The report's counts, accumulated clip by clip."""

    def __init__(self, source: CollectionSource, clips_read: int, events_read: int, rejects: list[Reject]):
        self.source, self.rejects = source, list(rejects)
        self.input = {"clips": clips_read, "events": events_read}
        self.splits = {s: Counter() for s in SPLITS}
        self.labels: dict[str, Counter] = {}
        self.seconds_read = 0.0
        self.events_clipped = 0

    def add(self, outcome: ClipOutcome) -> None:
        split = outcome.split
        self.rejects += outcome.rejects
        self.seconds_read += outcome.seconds
        self.events_clipped += outcome.events_clipped
        row = self.splits[split]
        row.update({f"references_{k}": v for k, v in outcome.cuts.items()})
        if outcome.scene is None:
            return
        scene = outcome.scene
        row.update(clips=1, events=len(scene.events), seconds=scene.duration)
        for e in scene.events:
            self.labels.setdefault(e.label, Counter()).update({"events": 1, "event_seconds": e.offset - e.onset})
        for label in {e.label for e in scene.events}:
            self.labels[label][f"{split}_clips"] += 1
        for r in scene.references:
            self.labels[r.label]["references"] += 1

    def report(self, padded: dict[str, Counter]) -> dict:
        by_rule = Counter(r.rule for r in self.rejects)
        rejected = {"clips": sum(r.clips for r in self.rejects), "events": sum(r.events for r in self.rejects)}
        splits = {}
        for split, counts in self.splits.items():
            row = counts.copy()
            row.update(padded[split])
            splits[split] = {
                "clips": row["clips"],
                "events": row["events"],
                "seconds": round(row["seconds"], 3),
                "references": row[f"references_{KEPT}"],
                "dropped_too_short": row[f"references_{TOO_SHORT}"],
                "dropped_silent": row[f"references_{SILENT}"],
                "padded_from_other_clips": row["padded"],
            }
        totals = {k: sum(s[k] for s in splits.values()) for k in ("references", "dropped_too_short", "dropped_silent")}
        return {
            "source": self.source.type,
            "input": self.input,
            "kept": {
                "clips": sum(s["clips"] for s in splits.values()),
                "events": sum(s["events"] for s in splits.values()),
            },
            "rejected": rejected,
            "rejected_by_rule": dict(sorted(by_rule.items())),
            "events_clipped_at_end": self.events_clipped,
            "seconds_read": round(self.seconds_read, 3),
            "splits": splits,
            "references": {
                "candidates": sum(totals.values()),
                "kept": totals["references"],
                "dropped_too_short": totals["dropped_too_short"],
                "dropped_silent": totals["dropped_silent"],
                "padded_from_other_clips": sum(s["padded_from_other_clips"] for s in splits.values()),
            },
            "labels": {
                label: {
                    **{f"{split}_clips": c[f"{split}_clips"] for split in SPLITS},
                    "events": c["events"],
                    "event_seconds": round(c["event_seconds"], 3),
                    "references": c["references"] + sum(padded[s][f"label/{label}"] for s in SPLITS),
                }
                for label, c in sorted(self.labels.items())
            },
        }


def segment_collection(params: Params) -> dict:
    """Build SERST from the collection staged in ``raw_dir`` (see the module doc); returns the report.

    Written to ``<serst_dir>.partial`` and swapped in at the end. Same params -> byte-identical outputs,
    whatever ``data.workers``.
    """
    source, raw, out = params.data.source, Path(params.data.raw_dir), Path(params.data.serst_dir)
    collection = read_collection(source, raw)
    clips_read = len(collection.clips) + sum(r.clips for r in collection.rejects)
    tally = _Tally(source, clips_read, collection.events_read, collection.rejects)
    try:
        splits = assign_splits(collection.clips, params)
    except CorpusError:  # too few groups: the rows rejected so far are still reported
        write_report(params.data.report_dir, tally.report({split: Counter() for split in SPLITS}), tally.rejects)
        raise
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    workers = worker_count(params.data.workers)
    log.info("segmenting %d clips from %s with %d worker(s)", len(collection.clips), raw, workers)
    manifests = {split: (tmp / f"{split}.jsonl").open("w") for split in SPLITS}
    short: dict[str, list[tuple[str, str, int, float]]] = {split: [] for split in SPLITS}
    labels: set[str] = set()
    outcomes = ordered_map(segment_clip, _tasks(splits, params, tmp, collection.captions), workers)
    try:
        for outcome in progress(outcomes, total=len(collection.clips), desc="segment", unit="clip"):
            tally.add(outcome)
            if outcome.scene is not None:
                manifests[outcome.split].write(json.dumps(outcome.scene.to_dict()) + "\n")
                labels.update(e.label for e in outcome.scene.events)
                short[outcome.split] += [(outcome.scene_id, label, i, outcome.loudest) for label, i in outcome.short]
    finally:
        for f in manifests.values():
            f.close()
    padded = {split: Counter() for split in SPLITS}
    if params.data.references.pad_from_other_clips:
        for split in SPLITS:
            padded[split] = pad_split(
                tmp / f"{split}.jsonl", short[split], params.audio.sample_rate, params.data.references
            )
    report = tally.report(padded)
    write_report(params.data.report_dir, report, tally.rejects)
    rejects_csv = Path(params.data.report_dir) / REJECTS
    for reject in tally.rejects[:SHOWN_REJECTS]:
        log.warning("rejected %s (%s): %s", reject.item, reject.rule, reject.reason)
    if len(tally.rejects) > SHOWN_REJECTS:
        log.warning("... and %d more rejects, all listed in %s", len(tally.rejects) - SHOWN_REJECTS, rejects_csv)
    if not labels:
        shutil.rmtree(tmp)
        raise CorpusError(f"{raw}: no usable clips ({len(tally.rejects)} rejects, listed in {rejects_csv})")
    for split in SPLITS:
        if not report["splits"][split]["clips"]:
            shutil.rmtree(tmp)
            raise CorpusError(
                f"{raw}: the {split} split is empty: every clip assigned to it was rejected "
                f"({len(tally.rejects)} rejects, listed in {rejects_csv}); later stages need it"
            )
    write_labels(tmp, {label: collection.captions[label] for label in labels})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info(
        "%d of %d clips kept (%d rejected: %s); %d references kept; wrote %s, rejects in %s",
        report["kept"]["clips"],
        clips_read,
        report["rejected"]["clips"],
        ", ".join(f"{n} {rule}" for rule, n in report["rejected_by_rule"].items()) or "none",
        report["references"]["kept"],
        out,
        rejects_csv,
    )
    return report
