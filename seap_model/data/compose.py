"""SERST composed from the shipped corpus: its single-event clips (no timestamps) are mixed into scenes with
strong labels. A collection that already has strong labels is segmented clip by clip instead
(``strong_segment``); the segment stage picks one or the other.

Layout under ``serst_dir``: ``audio/<split>/<id>.wav``, ``references/<split>/<id>_<label>_<i>.wav``,
``{train,val,test}.jsonl`` and ``labels.json``; under ``report_dir``: ``report.json`` (metrics) and
``rejects.csv`` (item, rule, reason).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from seap_model.audio import AudioError, load_audio, save_audio
from seap_model.config import Params
from seap_model.data.corpus import Clip, CorpusError, Reject, read_corpus
from seap_model.data.manifest import SPLITS, Reference, Scene, caption_events, write_labels, write_manifest
from seap_model.data.references import SILENT, TOO_SHORT, cut_references
from seap_model.data.report import write_report
from seap_model.data.scenes import Source, compose_scene, trim_silence
from seap_model.data.split import split_clips
from seap_model.progress import progress

log = logging.getLogger(__name__)


def load_sources(clips: list[Clip], params: Params) -> tuple[list[Source], list[Reject]]:
    """Load and silence-trim every clip; unreadable, silent and duplicate audio become rejects."""
    sr, refs = params.audio.sample_rate, params.data.references
    frame = max(1, round(refs.frame_seconds * sr))
    sources, rejects, seen = [], [], {}
    for clip in progress(clips, desc="load clips", unit="clip"):
        try:
            wave = load_audio(clip.path, sr).numpy()
        except AudioError as exc:
            reason = str(exc).replace(str(clip.path), clip.file).removeprefix(f"{clip.file}: ")
            rejects.append(Reject(clip.file, reason, "unreadable", clips=1))  # no absolute paths in outputs
            continue
        digest = hashlib.sha256(wave.tobytes()).hexdigest()
        if digest in seen:
            rejects.append(Reject(clip.file, f"same audio as {seen[digest]}", "duplicate", clips=1))
            continue
        seen[digest] = clip.file
        trimmed = trim_silence(wave, frame, params.data.scenes.trim_db)
        if not len(trimmed):
            rejects.append(Reject(clip.file, "audio is digital silence", "silent_clip", clips=1))
            continue
        sources.append(Source(clip, trimmed))
    return sources, rejects


def _build_split(
    split: str, sources: list[Source], params: Params, out: Path, captions: dict[str, str]
) -> tuple[list[Scene], Counter]:
    """Compose, write and describe the scenes of one split; returns (scenes, reference cut counts)."""
    sr, refs = params.audio.sample_rate, params.data.references
    pool: dict[str, list[Source]] = {}
    for source in sources:
        pool.setdefault(source.clip.label, []).append(source)
    rng = np.random.default_rng([params.seed, SPLITS.index(split)])
    scenes, counts = [], Counter()
    primaries = [s for s in sources for _ in range(params.data.scenes.scenes_per_clip)]
    for k, primary in enumerate(progress(primaries, desc=f"scenes {split}", unit="scene")):
        scene_id = f"{split}_{k:04d}"
        mix, events = compose_scene(primary, pool, params.data.scenes, refs.seconds, sr, rng)
        audio = f"audio/{split}/{scene_id}.wav"
        save_audio(out / audio, mix, sr)
        references = []
        for cut in cut_references(mix, events, sr, refs):
            counts[cut.dropped or "kept"] += 1
            if cut.dropped:
                continue
            ref_audio = f"references/{split}/{scene_id}_{cut.label}_{cut.index}.wav"
            save_audio(out / ref_audio, cut.wave, sr)
            spans = [(round(a, 7), round(b, 7)) for a, b in cut.spans]
            references.append(Reference(cut.label, ref_audio, spans))
        caption, _ = caption_events(events, captions)
        scenes.append(Scene(scene_id, split, audio, round(len(mix) / sr, 4), caption, events, references))
    return scenes, counts


def _report(n_rows: int, rejects: list[Reject], splits: dict[str, list[Source]], results: dict) -> dict:
    """Metrics: corpus rows kept/rejected, per-split and per-label counts, references kept/dropped per rule."""
    totals: Counter = sum((results[split][1] for split in SPLITS), Counter())
    scenes = [scene for split in SPLITS for scene in results[split][0]]
    clips = Counter((split, s.clip.label) for split in SPLITS for s in splits[split])
    events = Counter(e.label for scene in scenes for e in scene.events)
    references = Counter(r.label for scene in scenes for r in scene.references)
    per_split = {}
    for split in SPLITS:
        split_scenes, counts = results[split]
        per_split[split] = {
            "clips": len(splits[split]),
            "scenes": len(split_scenes),
            "events": sum(len(s.events) for s in split_scenes),
            "references": counts["kept"],
            "dropped_too_short": counts[TOO_SHORT],
            "dropped_silent": counts[SILENT],
            "scenes_without_references": sum(not s.references for s in split_scenes),
        }
    return {
        "corpus": {"rows": n_rows, "clips": n_rows - len(rejects), "rejected": len(rejects)},
        "splits": per_split,
        "references": {
            "candidates": totals["kept"] + totals[TOO_SHORT] + totals[SILENT],
            "kept": totals["kept"],
            "dropped_too_short": totals[TOO_SHORT],
            "dropped_silent": totals[SILENT],
        },
        "labels": {
            label: {
                **{f"{split}_clips": clips[split, label] for split in SPLITS},
                "events": events[label],
                "references": references[label],
            }
            for label in sorted({label for _, label in clips})
        },
    }


def compose_serst(params: Params) -> dict:
    """Build SERST from the shipped corpus staged in ``raw_dir`` into ``serst_dir``; returns the report.

    The report (also ``report_dir/report.json``) counts corpus rows kept and rejected (listed in
    ``report_dir/rejects.csv``), scenes and references per split, references dropped per rule, and
    clips, events and references per label.

    Everything is written to ``<serst_dir>.partial`` first and swapped in at the end, so an
    interrupted run leaves no half-built data set. Same params -> byte-identical outputs.
    """
    raw, out = Path(params.data.raw_dir), Path(params.data.serst_dir)
    clips, rejects = read_corpus(raw)
    n_rows = len(clips) + len(rejects)
    sources, audio_rejects = load_sources(clips, params)
    rejects += audio_rejects
    for reject in rejects:
        log.warning("rejected %s: %s", reject.item, reject.reason)
    if not sources:
        raise CorpusError(f"{raw}: no usable clips ({len(rejects)} rejected, see the log)")
    by_file = {s.clip.file: s for s in sources}
    splits = {
        split: [by_file[c.file] for c in chosen]
        for split, chosen in split_clips([s.clip for s in sources], params.data.split, params.seed).items()
    }
    captions = {s.clip.label: s.clip.caption for s in sources}

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    results = {split: _build_split(split, splits[split], params, tmp, captions) for split in SPLITS}
    for split in SPLITS:
        write_manifest(tmp / f"{split}.jsonl", results[split][0])
    write_labels(tmp, captions)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    report = _report(n_rows, rejects, splits, results)
    write_report(params.data.report_dir, report, rejects)

    for split, row in report["splits"].items():
        log.info("%s: %d clips -> %d scenes, %d references", split, row["clips"], row["scenes"], row["references"])
    refs = report["references"]
    log.info(
        "references: %d kept, %d too short, %d silent; %d corpus rows rejected; wrote %s",
        refs["kept"],
        refs["dropped_too_short"],
        refs["dropped_silent"],
        len(rejects),
        out,
    )
    return report
