"""Segmenting clips that already have strong labels: the paper's reference arithmetic on hand-made labels,
span clipping, cross-clip padding (optional), grouped splits, determinism whatever the worker count."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seap_model.config import ReferenceParams, parse_params
from seap_model.data.collection import StrongClip, StrongEvent
from seap_model.data.corpus import CorpusError
from seap_model.data.manifest import SPLITS, read_manifest
from seap_model.data.padding import borrow_spans
from seap_model.data.references import SILENT, TOO_SHORT
from seap_model.data.strong_segment import ClipTask, assign_splits, clip_events, segment_clip
from tests.runner import run_stage

SR = 16000


def _clip(key: str, events: list[tuple[str, float, float]], group: str = "") -> StrongClip:
    return StrongClip(
        key,
        "",
        group or key,
        "m.jsonl:1",
        [StrongEvent(lb, a, b, f"m.jsonl:1 events[{i}]") for i, (lb, a, b) in enumerate(events)],
    )


def _task(tmp_path: Path, clip: StrongClip, clip_seconds: float, seconds: float = 2.0) -> ClipTask:
    return ClipTask(
        clip,
        "train_0000",
        "train",
        tmp_path,
        tmp_path / "out",
        SR,
        clip_seconds,
        ReferenceParams(seconds=seconds),
        {"dog": "a dog", "bell": "a bell", "cat": "a cat", "hush": "silence"},
    )


def test_paper_rule_pad_with_later_spans_trim_and_drop(tmp_path):
    # 6 s at 16 kHz: 4 s of noise, then 2 s of silence
    rng = np.random.default_rng(0)
    wave = np.concatenate([0.3 * rng.standard_normal(4 * SR), np.zeros(2 * SR)]).astype(np.float32)
    sf.write(tmp_path / "a.wav", wave, SR, subtype="FLOAT")
    clip = _clip(
        "a.wav",
        [
            ("dog", 0.0, 0.5),
            ("dog", 1.0, 1.8),
            ("dog", 2.0, 3.0),  # 0.5 + 0.8 + 1.0 s
            ("bell", 0.5, 3.5),  # 3 s: trimmed to 2 s
            ("cat", 3.6, 3.9),  # 0.3 s and nothing later: too short
            ("hush", 4.0, 6.0),  # 2 s of digital silence: energy filter
        ],
    )
    outcome = segment_clip(_task(tmp_path, clip, clip_seconds=6.0))
    assert outcome.rejects == [] and outcome.seconds == 6.0
    assert outcome.cuts == {"kept": 2, TOO_SHORT: 3, SILENT: 1}
    assert outcome.short == [("cat", 0), ("dog", 1), ("dog", 2)]
    scene = outcome.scene
    refs = {r.label: r for r in scene.references}
    assert sorted(refs) == ["bell", "dog"]
    assert refs["dog"].spans == [(0.0, 0.5), (1.0, 1.8), (2.0, 2.7)]  # 0.5 + 0.8 + 0.7 of the third = 2 s
    assert refs["bell"].spans == [(0.5, 2.5)]
    assert refs["dog"].audio == "references/train/train_0000_dog_0.wav"
    mix, _ = sf.read(tmp_path / "out" / scene.audio, dtype="float32")
    for ref in refs.values():
        got, sr = sf.read(tmp_path / "out" / ref.audio, dtype="float32")
        expected = np.concatenate([mix[round(a * SR) : round(b * SR)] for a, b in ref.spans])
        assert sr == SR and len(got) == 2 * SR
        np.testing.assert_array_equal(got, expected)
    assert scene.caption == "a dog and a bell, then a cat, then silence"
    assert [e.source for e in scene.events] == ["a.wav"] * 6


def test_clip_events_reject_late_spans_and_clip_offsets():
    clip = _clip("a.wav", [("dog", 0.5, 1.0), ("dog", 2.5, 4.0), ("bell", 3.0, 3.5), ("bell", 1.0, 9.0)])
    events, rejects, clipped = clip_events(clip, end=3.0, clip_seconds=10.0)
    assert [(e.label, e.onset, e.offset) for e in events] == [("dog", 0.5, 1.0), ("bell", 1.0, 3.0), ("dog", 2.5, 3.0)]
    assert clipped == 2
    assert [(r.item, r.rule, r.reason) for r in rejects] == [
        ("m.jsonl:1 events[2]", "after_end", "span 3.0-3.5 s starts after the audio ends (3.000 s)")
    ]
    events, rejects, _ = clip_events(clip, end=10.0, clip_seconds=2.0)
    assert [(e.onset, e.offset) for e in events] == [(0.5, 1.0), (1.0, 2.0)]
    assert {r.reason for r in rejects} == {
        "span 2.5-4.0 s starts after clip_seconds (2.0 s)",
        "span 3.0-3.5 s starts after clip_seconds (2.0 s)",
    }


def test_clip_is_cut_or_zero_padded_to_clip_seconds(tmp_path):
    sf.write(tmp_path / "long.flac", 0.5 * np.ones((5 * 8000, 2), np.float32), 8000)
    outcome = segment_clip(_task(tmp_path, _clip("long.flac", [("dog", 0.0, 4.5)]), clip_seconds=3.0))
    mix, sr = sf.read(tmp_path / "out" / outcome.scene.audio, dtype="float32")
    assert (sr, mix.shape, outcome.scene.duration, outcome.seconds) == (SR, (3 * SR,), 3.0, 5.0)
    assert outcome.scene.events[0].offset == 3.0
    sf.write(tmp_path / "short.wav", 0.5 * np.ones(SR, np.float32), SR)
    outcome = segment_clip(_task(tmp_path, _clip("short.wav", [("dog", 0.0, 1.0)]), clip_seconds=3.0))
    mix, _ = sf.read(tmp_path / "out" / outcome.scene.audio, dtype="float32")
    assert len(mix) == 3 * SR and not mix[SR:].any() and outcome.cuts == {TOO_SHORT: 1}


def test_borrow_spans_arithmetic():
    donors = [("b", 1.0, 1.3), ("c", 0.2, 0.6), ("a", 0.0, 0.5)]
    assert borrow_spans(0.5, donors) == [("b", 1.0, 1.3), ("c", 0.2, 0.4)]
    assert borrow_spans(0.3, donors) == [("b", 1.0, 1.3)]
    assert borrow_spans(1.2, donors) == [("b", 1.0, 1.3), ("c", 0.2, 0.6), ("a", 0.0, 0.5)]
    assert borrow_spans(1.3, donors) is None


def _collection(root: Path, clips: dict[str, list], seconds: float = 2.0, groups: dict | None = None) -> None:
    (root / "audio").mkdir(parents=True)
    rows = []
    for k, (key, events) in enumerate(clips.items()):
        sf.write(root / key, np.random.default_rng(k).uniform(-0.5, 0.5, round(seconds * SR)).astype(np.float32), SR)
        rows.append({"clip": key, "events": [{"label": lb, "onset": a, "offset": b} for lb, a, b in events]})
        if groups and key in groups:
            rows[-1]["group"] = groups[key]
    (root / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _params(root: Path, out: str, **data):
    source = {"type": "local", "root": str(root / "src"), "manifest": "clips.jsonl", "clip_seconds": 2.0}
    return parse_params(
        {
            "data": {
                "raw_dir": str(root / "raw"),
                "serst_dir": str(root / out / "serst"),
                "report_dir": str(root / out / "report"),
                "source": source,
                "workers": 1,
                "references": {"seconds": 1.0},
            }
            | data
        }
    )


@pytest.mark.parametrize("enabled", [False, True])
def test_pad_from_other_clips_of_the_same_split(tmp_path, enabled):
    # The three dog clips are one recording (one group, so one split: train, as the bell groups fill val and
    # test); each bell clip is alone in its split, with nothing to borrow from.
    _collection(
        tmp_path / "src",
        {
            "audio/a.wav": [("dog", 0.0, 0.5)],
            "audio/b.wav": [("dog", 1.0, 1.3)],
            "audio/c.wav": [("dog", 0.2, 0.6)],
            "audio/x.wav": [("bell", 0.0, 0.5)],
            "audio/y.wav": [("bell", 0.0, 0.5)],
        },
        groups={"audio/a.wav": "rec", "audio/b.wav": "rec", "audio/c.wav": "rec"},
    )
    params = _params(tmp_path, "out", references={"seconds": 1.0, "pad_from_other_clips": enabled})
    run_stage("download", params)
    report = run_stage("segment", params)
    scenes = read_manifest(Path(params.data.serst_dir) / "train.jsonl")
    assert [s.events[0].source for s in scenes] == ["audio/a.wav", "audio/b.wav", "audio/c.wav"]
    if not enabled:  # the paper: no padding across clips, so every reference is too short
        assert report["references"] == {
            "candidates": 5,
            "kept": 0,
            "dropped_too_short": 5,
            "dropped_silent": 0,
            "padded_from_other_clips": 0,
        }
        return
    assert report["references"] == {
        "candidates": 5,
        "kept": 3,
        "dropped_too_short": 2,
        "dropped_silent": 0,
        "padded_from_other_clips": 3,
    }
    assert report["labels"]["dog"]["references"] == 3
    expected = {
        "train_0000": [("train_0001", 1.0, 1.3), ("train_0002", 0.2, 0.4)],  # need 0.5 s: clips after it, in order
        "train_0001": [("train_0002", 0.2, 0.6), ("train_0000", 0.0, 0.3)],  # need 0.7 s: wraps round
        "train_0002": [("train_0000", 0.0, 0.5), ("train_0001", 1.0, 1.1)],  # need 0.6 s
    }
    mixes = {s.id: sf.read(s.path(s.audio), dtype="float32")[0] for s in scenes}
    for scene in scenes:
        (ref,) = scene.references
        assert ref.spans == [(scene.events[0].onset, scene.events[0].offset)]
        assert [tuple(b) for b in ref.borrowed] == expected[scene.id]
        parts = [mixes[scene.id][round(a * SR) : round(b * SR)] for a, b in ref.spans]
        parts += [mixes[sid][round(a * SR) : round(b * SR)] for sid, a, b in ref.borrowed]
        np.testing.assert_array_equal(sf.read(scene.path(ref.audio), dtype="float32")[0], np.concatenate(parts))


def test_groups_stay_in_one_split():
    clips = [_clip(f"a/{g}_{k}.wav", [("dog", 0, 1)], group=f"rec{g}") for g in range(12) for k in range(3)]
    clips += [_clip(f"b/{k}.wav", [("bell", 0, 2), ("dog", 0, 1)]) for k in range(10)]
    params = parse_params({"seed": 3})
    splits = assign_splits(clips, params)
    split_of = {c.key: split for split in SPLITS for c in splits[split]}
    assert sorted(split_of) == sorted(c.key for c in clips)
    for g in range(12):
        assert len({split_of[f"a/{g}_{k}.wav"] for k in range(3)}) == 1
    assert sum(split_of[f"a/{g}_0.wav"] == "train" for g in range(12)) == 8  # 12 groups: 8 / 2 / 2
    # 22 groups: 3 val + 3 test overall, spread by largest remainder (dog 2 + bell 1 in each)
    assert sum(split_of[f"b/{k}.wav"] == "train" for k in range(10)) == 8  # bell-dominant: stratified apart
    assert assign_splits(list(reversed(clips)), params) == splits
    assert assign_splits(clips, parse_params({"seed": 4})) != splits


def test_outputs_do_not_depend_on_the_worker_count(tmp_path):
    events = [("dog", 0.1, 0.9), ("bell", 0.5, 1.9), ("dog", 1.2, 1.6)]
    _collection(tmp_path / "src", {f"audio/{k:02d}.wav": events for k in range(8)})
    outputs = []
    for workers in (1, 2):
        params = _params(tmp_path, f"w{workers}", workers=workers)
        run_stage("download", params)
        run_stage("segment", params)
        out = Path(params.data.serst_dir)
        outputs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1] and len(outputs[0]) > 8


def test_no_usable_clip_stops_with_the_rejects_written(tmp_path):
    # Every event starts after its 2 s clip ends; three clips, so the splits themselves could be filled.
    _collection(tmp_path / "src", {f"audio/{k}.wav": [("dog", 5.0, 6.0)] for k in "abc"})
    params = _params(tmp_path, "out")
    run_stage("download", params)
    with pytest.raises(CorpusError, match=r"no usable clips \(6 rejects, listed in .*rejects\.csv\)"):
        run_stage("segment", params)
    assert not Path(params.data.serst_dir).exists()
    rules = (Path(params.data.report_dir) / "rejects.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in rules] == [["item", "rule"]] + [
        row
        for k, key in enumerate("abc", 1)
        for row in ([f"clips.jsonl:{k} events[0]", "after_end"], [f"audio/{key}.wav", "no_events"])
    ]


def test_a_split_whose_clips_are_all_rejected_stops_naming_it(tmp_path):
    clips = {f"audio/{k}.wav": [("dog", 0.0, 1.0)] for k in "abcdef"}
    _collection(tmp_path / "src", clips)
    params = _params(tmp_path, "out")
    run_stage("download", params)
    test_clip = next(c for c in assign_splits_of(params) if c[1] == "test")[0]
    (Path(params.data.raw_dir) / test_clip).write_bytes(b"not audio")  # the only test clip becomes unreadable
    with pytest.raises(CorpusError, match=r"the test split is empty: every clip assigned to it was rejected"):
        run_stage("segment", params)
    assert "unreadable" in (Path(params.data.report_dir) / "rejects.csv").read_text()
    assert not Path(params.data.serst_dir).exists()


def assign_splits_of(params):
    from seap_model.data.collection import read_collection

    splits = assign_splits(read_collection(params.data.source, Path(params.data.raw_dir)).clips, params)
    return [(c.key, split) for split in SPLITS for c in splits[split]]
