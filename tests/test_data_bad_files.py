"""A messy user collection end to end (download + segment, 2 worker processes): every bad item is rejected
with its reason, every good one is kept, and kept + rejected = input."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seap_model.config import parse_params
from seap_model.data.manifest import SPLITS, read_labels, read_manifest
from tests.runner import run_stage

SR = 16000
CLIP_SECONDS = 3.0


def _noise(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((round(seconds * sr), channels))).astype(np.float32)


GOOD = {  # key -> (sample rate, channels, format, seconds)
    "audio/a_8k.wav": (8000, 1, "WAV", 3.0),
    "audio/b_48k_stereo.flac": (48000, 2, "FLAC", 3.0),
    "audio/c_22k.ogg": (22050, 1, "OGG", 3.0),
    "audio/d_44k_stereo.mp3": (44100, 2, "MP3", 3.0),
    "audio/e_long.wav": (32000, 1, "WAV", 5.0),  # cut to clip_seconds
    "audio/f_short.flac": (16000, 2, "FLAC", 2.5),  # zero-padded to clip_seconds
}
TRUNCATED_WAV = "audio/g_truncated.wav"  # decodes to its first second: kept, its late event rejected
BAD_AUDIO = {  # key -> rule
    "audio/empty.wav": "empty",
    "audio/corrupt.flac": "unreadable",
    "audio/truncated.mp3": "truncated",
    "audio/nan.wav": "non_finite",
    "audio/inf.wav": "non_finite",
    "audio/zeros.wav": "silent_clip",
    "audio/missing.wav": "missing_file",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    src = root / "src"
    (src / "audio").mkdir(parents=True)
    for k, (key, (sr, channels, fmt, seconds)) in enumerate(GOOD.items()):
        sf.write(src / key, _noise(seconds, sr, channels, k), sr, format=fmt)
    sf.write(src / "audio/empty.wav", np.zeros((0, 1), np.float32), SR)
    sf.write(src / "audio/full.flac", _noise(3.0, SR, 1, 9), SR)
    (src / "audio/corrupt.flac").write_bytes((src / "audio/full.flac").read_bytes()[:3000])
    sf.write(src / "audio/full.mp3", _noise(3.0, 44100, 2, 10), 44100, format="MP3")
    (src / "audio/truncated.mp3").write_bytes((src / "audio/full.mp3").read_bytes()[:4000])
    for name, value in [("nan", np.nan), ("inf", np.inf)]:
        wave = _noise(3.0, SR)
        wave[100] = value
        sf.write(src / f"audio/{name}.wav", wave, SR, subtype="FLOAT")
    sf.write(src / "audio/zeros.wav", np.zeros((3 * SR, 1), np.float32), SR)
    sf.write(src / "audio/full.wav", _noise(3.0, SR, 1, 11), SR, subtype="PCM_16")
    (src / TRUNCATED_WAV).write_bytes((src / "audio/full.wav").read_bytes()[: 44 + 2 * SR])  # header + 1 s
    (src / "labels.csv").write_text("label,caption\ndog,a dog barking\nbell,a bell ringing\n")

    rows = [["clip", "caption", "label", "onset", "offset", "group"]]
    for key in [*GOOD, TRUNCATED_WAV]:
        rows += [[key, "", "dog", "0.2", "1.4", ""], [key, "", "bell", "1.0", "2.6", ""]]
    for key in BAD_AUDIO:
        rows.append([key, "", "dog", "0.5", "1.5", ""])
    bad_rows = {
        "past_end": ["audio/a_8k.wav", "", "dog", "3.5", "4.0", ""],  # starts after the audio ends: rejected
        "over_end": ["audio/b_48k_stereo.flac", "", "dog", "2.5", "9.0", ""],  # ends after it: clipped, kept
        "reversed": ["audio/c_22k.ogg", "", "dog", "2.0", "1.0", ""],
        "unknown": ["audio/c_22k.ogg", "", "cat", "0.0", "1.0", ""],
        "duplicate": ["audio/a_8k.wav", "", "dog", "0.2", "1.4", ""],
        "negative": ["audio/a_8k.wav", "", "bell", "-1", "1.0", ""],
        "past_clip_seconds": ["audio/e_long.wav", "", "bell", "3.5", "4.5", ""],
    }
    rows += bad_rows.values()
    with (src / "clips.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with (src / "clips.csv").open("ab") as f:
        f.write(b"audio/d_44k_stereo.mp3,caf\xe9 noise,bell,0.1,0.5,\n")  # non-UTF-8 caption
    lines = {name: (len(GOOD) + 1) * 2 + len(BAD_AUDIO) + 2 + i for i, name in enumerate(bad_rows)}
    lines["truncated_wav_bell"] = 2 * len(GOOD) + 3
    lines["not_utf8"] = len(rows) + 1

    params = parse_params(
        {
            "data": {
                "raw_dir": str(root / "raw"),
                "serst_dir": str(root / "serst"),
                "report_dir": str(root / "report"),
                "workers": 2,
                "source": {
                    "type": "local",
                    "root": str(src),
                    "manifest": "clips.csv",
                    "labels": "labels.csv",
                    "clip_seconds": CLIP_SECONDS,
                    "retries": 0,
                },
                "references": {"seconds": 1.0},
                "split": {"val": 0.2, "test": 0.2},
            }
        }
    )
    downloaded = run_stage("download", params)
    n_rows = len(rows)  # the data rows (all but the header) and the non-UTF-8 row
    return params, downloaded, run_stage("segment", params), lines, n_rows


def _rejects(params) -> dict[str, tuple[str, str]]:
    with (Path(params.data.report_dir) / "rejects.csv").open(newline="") as f:
        return {row["item"]: (row["rule"], row["reason"]) for row in csv.DictReader(f)}


def test_every_bad_item_is_rejected_with_its_reason(built):
    params, downloaded, _, lines, _ = built
    assert downloaded["failed"] == 1 and downloaded["failures"][0]["key"] == "audio/missing.wav"
    rejects = _rejects(params)
    for key, rule in BAD_AUDIO.items():
        assert rejects[key][0] == rule, (key, rejects.get(key))
    assert "cannot read audio" in rejects["audio/corrupt.flac"][1]
    assert "header declares" in rejects["audio/truncated.mp3"][1]
    assert rejects["audio/empty.wav"][1] == "audio is empty (0 samples)"
    expected = {
        "past_end": ("after_end", "span 3.5-4.0 s starts after the audio ends (3.000 s)"),
        "reversed": ("bad_span", "onset 2.0 s is after offset 1.0 s"),
        "unknown": ("unknown_label", "field 'label': unknown label 'cat' (not in the labels file)"),
        "duplicate": ("duplicate", "duplicate of clips.csv:2"),
        "negative": ("bad_span", "field 'onset': '-1' is not a finite, non-negative number of seconds"),
        "past_clip_seconds": ("after_end", "span 3.5-4.5 s starts after clip_seconds (3.0 s)"),
        "not_utf8": ("not_utf8", "field 'caption': not valid UTF-8 (byte 0xe9 at character 3)"),
        "truncated_wav_bell": ("after_end", "span 1.0-2.6 s starts after the audio ends (1.000 s)"),
    }
    for name, (rule, reason) in expected.items():
        assert rejects[f"clips.csv:{lines[name]}"] == (rule, reason), name
    assert len(rejects) == len(BAD_AUDIO) + len(expected)


def test_every_good_item_is_kept_resampled_mono_and_fitted(built):
    params, _, report, _, _ = built
    out = Path(params.data.serst_dir)
    scenes = [s for split in SPLITS for s in read_manifest(out / f"{split}.jsonl")]
    assert sorted({e.source for s in scenes for e in s.events}) == sorted([*GOOD, TRUNCATED_WAV])
    assert read_labels(out) == {"bell": "a bell ringing", "dog": "a dog barking"}
    truncated = next(s for s in scenes if s.events[0].source == TRUNCATED_WAV)
    assert [(e.label, e.onset, e.offset) for e in truncated.events] == [("dog", 0.2, 1.0)]
    scenes.remove(truncated)
    for scene in scenes:
        info = sf.info(scene.path(scene.audio))
        assert (info.samplerate, info.channels, info.frames) == (SR, 1, CLIP_SECONDS * SR)
        assert all(0 <= e.onset < e.offset <= CLIP_SECONDS for e in scene.events)
        assert {r.label for r in scene.references} == {"dog", "bell"}  # 1.2 s and 1.6 s spans: one 1 s ref each
        for ref in scene.references:
            assert sf.info(scene.path(ref.audio)).frames == SR
    over = next(s for s in scenes if s.events[0].source == "audio/b_48k_stereo.flac")
    assert [(e.label, e.onset, e.offset) for e in over.events if e.onset == 2.5] == [("dog", 2.5, 3.0)]
    assert report["events_clipped_at_end"] == 3  # that one, the bell of the 2.5 s clip, the dog of the 1 s one
    assert sum(report["splits"][s]["clips"] for s in SPLITS) == len(GOOD) + 1


def test_kept_plus_rejected_equals_input(built):
    params, _, report, _, n_rows = built
    assert report["input"] == {"clips": len(GOOD) + 1 + len(BAD_AUDIO), "events": n_rows}
    for what in ("clips", "events"):
        assert report["kept"][what] + report["rejected"][what] == report["input"][what]
    assert report["kept"]["clips"] == len(GOOD) + 1
    assert report["kept"]["events"] == 2 * len(GOOD) + 2  # + the clipped one, + the truncated WAV's dog
    assert sum(report["rejected_by_rule"].values()) == len(_rejects(params))
    refs = report["references"]
    assert refs["candidates"] == refs["kept"] + refs["dropped_too_short"] + refs["dropped_silent"]
    assert json.loads((Path(params.data.report_dir) / "report.json").read_text()) == report
