"""The segment stage: split, scene synthesis, and SERST end to end on a tiny synthetic corpus."""

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seap_model.config import SceneParams, parse_params
from seap_model.data.corpus import Clip
from seap_model.data.fetch import write_checksums
from seap_model.data.manifest import SPLITS, caption_events, read_labels, read_manifest
from seap_model.data.scenes import Source, compose_scene, crop_loudest, occurrence_onsets, trim_silence
from tests.runner import run_stage

SR = 16000
CAPTIONS = {"dog": "a dog barking", "bell": "a bell ringing", "rain": "rain falling"}
SECONDS = {"dog": 0.3, "bell": 1.4, "rain": 3.0}  # shorter than a reference, between, longer than a scene


def _signal(label: str, k: int, rng: np.random.Generator) -> np.ndarray:
    n = round(SECONDS[label] * SR)
    if label == "bell":
        wave = np.sin(2 * np.pi * (600 + 50 * k) * np.arange(n) / SR) * np.exp(-np.arange(n) / SR)
    else:
        wave = rng.standard_normal(n) * (0.3 if label == "rain" else np.hanning(n))
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """5 clips per label, plus a corrupt file, a silent file, a duplicate and a bad metadata row."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    (root / "licenses").mkdir()
    (root / "ATTRIBUTION.md").write_text("synthetic\n")
    rng = np.random.default_rng(0)
    rows = []
    for label, caption in CAPTIONS.items():
        for k in range(1, 6):
            file = f"audio/{label}_{k:02d}.flac"
            sf.write(root / file, _signal(label, k, rng), SR)
            rows.append([file, label, caption, SECONDS[label]])
    (root / "audio" / "corrupt.flac").write_bytes(b"fLaC but truncated")
    sf.write(root / "audio" / "silent.flac", np.zeros(SR, np.float32), SR)
    (root / "audio" / "copy.flac").write_bytes((root / "audio" / "dog_01.flac").read_bytes())
    rows += [
        ["audio/corrupt.flac", "dog", CAPTIONS["dog"], 1.0],
        ["audio/silent.flac", "bell", CAPTIONS["bell"], 1.0],
        ["audio/copy.flac", "dog", CAPTIONS["dog"], 0.3],
        ["audio/rain_01.flac", "rain", CAPTIONS["rain"], "three"],
    ]
    with (root / "metadata.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["file", "label", "caption", "duration"], *rows])
    write_checksums(root)
    return root


def _params(corpus: Path, root: Path, seed: int = 0):
    return parse_params(
        {
            "seed": seed,
            "data": {
                "corpus": str(corpus),
                "raw_dir": str(root / "raw"),
                "serst_dir": str(root / "serst"),
                "report_dir": str(root / "report"),
                "scenes": {"seconds": 2.0, "scenes_per_clip": 2},
                "references": {"seconds": 1.0},
            },
        }
    )


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    params = _params(corpus, root)
    run_stage("download", params)
    return params, run_stage("segment", params)


def test_occurrence_onsets_recur_without_overlap():
    rng = np.random.default_rng(0)
    for length, expected in [(4800, 4), (16000, 1), (32000, 1), (100, 160)]:
        onsets = occurrence_onsets(length, 33280, 16000, rng)
        assert len(onsets) == expected
        assert onsets[0] >= 0 and onsets[-1] + length <= 33280
        assert all(b - a >= length for a, b in itertools.pairwise(onsets))
    assert len(occurrence_onsets(10000, 25000, 32000, rng)) == 2  # as many as fit


def test_trim_and_crop():
    wave = np.concatenate([np.zeros(1600), np.ones(800), 1e-4 * np.ones(800), np.zeros(1600)]).astype(np.float32)
    assert trim_silence(wave, 800, -60.0).tolist() == [1.0] * 800  # the tail is 80 dB down
    assert len(trim_silence(wave, 800, -90.0)) == 1600
    assert len(trim_silence(np.zeros(1000, np.float32), 800, -60.0)) == 0
    loud = np.concatenate([np.full(100, 0.1), np.ones(50), np.full(100, 0.1)])
    assert crop_loudest(loud, 50).tolist() == [1.0] * 50
    assert len(crop_loudest(loud, 500)) == 250


def test_compose_scene_events_gains_and_peak():
    rng = np.random.default_rng(1)
    short = Source(Clip("audio/dog.flac", Path("x"), "dog", "", 0.3), np.hanning(4800).astype(np.float32))
    long = Source(Clip("audio/rain.flac", Path("x"), "rain", "", 5.0), rng.standard_normal(80000).astype(np.float32))
    params = SceneParams(seconds=2.0, second_event_prob=1.0, max_events=2, peak=0.8)
    mix, events = compose_scene(short, {"dog": [short], "rain": [long]}, params, 1.0, SR, rng)
    assert mix.shape == (32000,) and np.abs(mix).max() == pytest.approx(0.8)
    dogs = [e for e in events if e.label == "dog"]
    assert len(dogs) == 4 and all(e.offset - e.onset == pytest.approx(0.3) for e in dogs)
    assert all(a.offset <= b.onset for a, b in itertools.pairwise(dogs))
    assert [(e.onset, e.offset, e.source) for e in events if e.label == "rain"] == [(0.0, 2.0, "audio/rain.flac")]
    assert events == sorted(events, key=lambda e: (e.onset, e.label))
    _, only = compose_scene(short, {"dog": [short]}, params, 1.0, SR, rng)  # no other label to add
    assert {e.label for e in only} == {"dog"}


def test_build_serst_outputs(built):
    params, report = built
    out, report_dir = Path(params.data.serst_dir), Path(params.data.report_dir)
    assert report["corpus"] == {"rows": 19, "clips": 15, "rejected": 4}
    rejects = {row["item"]: row["reason"] for row in csv.DictReader((report_dir / "rejects.csv").open())}
    assert set(rejects) == {"metadata.csv:20", "audio/corrupt.flac", "audio/silent.flac", "audio/copy.flac"}
    assert "cannot read audio" in rejects["audio/corrupt.flac"]
    assert "silence" in rejects["audio/silent.flac"]
    assert "same audio as audio/dog_01.flac" in rejects["audio/copy.flac"]
    assert "'three' is not a number" in rejects["metadata.csv:20"]
    assert json.loads((report_dir / "report.json").read_text()) == report
    refs = report["references"]
    assert refs["candidates"] == refs["kept"] + refs["dropped_too_short"] + refs["dropped_silent"]
    assert read_labels(out) == {"bell": "a bell ringing", "dog": "a dog barking", "rain": "rain falling"}

    sources = {}
    for split in SPLITS:
        path = out / f"{split}.jsonl"
        scenes = read_manifest(path)
        assert [s.to_dict() for s in scenes] == [json.loads(line) for line in path.read_text().splitlines()]
        assert len(scenes) == report["splits"][split]["scenes"] == 2 * report["splits"][split]["clips"]
        assert sum(len(s.references) for s in scenes) == report["splits"][split]["references"]
        sources[split] = {e.source for s in scenes for e in s.events}
        for scene in scenes:
            assert scene.split == split and scene.id.startswith(split)
            wave, sr = sf.read(scene.path(scene.audio), dtype="float32")
            assert sr == SR and len(wave) == 32000 and scene.duration == 2.0
            assert scene.caption == caption_events(scene.events, read_labels(out))[0]
            assert all(0 <= e.onset < e.offset <= 2.0 for e in scene.events)
            for ref in scene.references:
                ref_wave, _ = sf.read(scene.path(ref.audio), dtype="float32")
                cut = np.concatenate([wave[round(a * SR) : round(b * SR)] for a, b in ref.spans])
                np.testing.assert_array_equal(ref_wave, cut)
                assert len(ref_wave) == 16000
    assert not (sources["train"] & sources["val"]) and not (sources["train"] & sources["test"])
    assert not (sources["val"] & sources["test"])
    assert len(set.union(*sources.values())) == 15


def test_build_serst_is_deterministic_and_replaces_old_output(corpus, built, tmp_path):
    params, _ = built
    again = _params(corpus, tmp_path)
    run_stage("download", again)
    (tmp_path / "serst" / "audio").mkdir(parents=True)
    (tmp_path / "serst" / "audio" / "stale.wav").write_bytes(b"old")
    run_stage("segment", again)
    for first, second in [
        (params.data.serst_dir, tmp_path / "serst"),
        (params.data.report_dir, tmp_path / "report"),
    ]:
        first = Path(first)
        files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
        assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    other = _params(corpus, tmp_path / "seed1", seed=1)
    run_stage("download", other)
    run_stage("segment", other)
    assert (tmp_path / "seed1" / "serst" / "train.jsonl").read_bytes() != (
        tmp_path / "serst" / "train.jsonl"
    ).read_bytes()
