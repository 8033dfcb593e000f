"""experiments/swap_layout.py splits a swap/seed distance into layout and timbre: each view is blind to exactly
what it should be, and its table is built from the records alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import swap_layout


def spectrograms(n=6, mels=16, frames=40, seed=0):
    return np.random.default_rng(seed).normal(size=(n, mels, frames))


def test_a_shift_in_time_moves_layout_and_frames_but_not_the_long_term_spectrum():
    a = spectrograms()
    d = swap_layout.distances(a, np.roll(a, 7, axis=2))
    assert np.allclose(d["spectrum"], 0) and (d["frames"] > 0.5).all() and (d["envelope"] > 0.05).all()


def test_a_change_of_timbre_and_level_moves_the_spectrum_but_not_the_envelope():
    a = spectrograms()
    tilt = np.linspace(-2, 3, a.shape[1])[None, :, None]  # a per-band gain: colour and loudness, same timing
    d = swap_layout.distances(a, a + tilt)
    assert np.allclose(d["envelope"], 0) and (d["spectrum"] > 1).all() and (d["frames"] > 1).all()


def test_ratios_are_median_swap_over_seed_distance_with_an_interval_around_them():
    a = spectrograms(n=50)
    other_seed = np.roll(a, 5, axis=2)  # the seed moves layout only
    gains = np.random.default_rng(1).uniform(1, 2, size=(len(a), 1, 1))
    swapped = a + gains * np.linspace(0, 2, a.shape[1])[None, :, None]  # the swap moves timbre only
    r = swap_layout.ratios(a, other_seed, swapped)
    assert r["spectrum"]["ratio"] > 1e6 and r["envelope"]["ratio"] < 1e-6
    for view in swap_layout.VIEWS:
        assert r[view]["ci95_low"] <= r[view]["ratio"] <= r[view]["ci95_high"]


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        swap_layout.distances(spectrograms(), spectrograms(frames=39))


def test_table_reads_every_record(tmp_path):
    assert swap_layout.table(tmp_path) == ""
    view = {"ratio": 0.6, "ci95_low": 0.5, "ci95_high": 0.7, "swap_distance": 1.0, "seed_distance": 1.6}
    body = {
        "system": "decoupled_frames",
        "training_seed": 1,
        "metrics": {"items": 384, **dict.fromkeys(swap_layout.VIEWS, view)},
    }
    (tmp_path / "decoupled_frames-seed1-swap_layout.json").write_text(json.dumps(body))
    out = swap_layout.table(tmp_path)
    assert "| decoupled_frames | test split (unseen recordings) | 1 | 384 | 0.6 [0.5, 0.7]" in out
    assert out.rstrip().endswith("| – |")
    seen = {**body, "variant": "train"}
    (tmp_path / "decoupled_frames-seed1-train-swap_layout.json").write_text(json.dumps(seen))
    # the evaluation's own ratio comes from the run's evaluation record beside it
    (tmp_path / "decoupled_frames-seed1-train.json").write_text(json.dumps({"metrics": {"swap_over_seed_ratio": 1.1}}))
    rows = swap_layout.table(tmp_path).splitlines()[2:]
    assert len(rows) == 2 and rows[1].startswith("| decoupled_frames | training split (seen recordings) | 1 |")
    assert rows[1].endswith("| 1.1 |")
    assert "Over training seeds" not in swap_layout.table(tmp_path)  # one seed per system and scenes: no spread
    other = {**body, "training_seed": 2, "metrics": {**body["metrics"], "spectrum": {**view, "ratio": 1.0}}}
    (tmp_path / "decoupled_frames-seed2-swap_layout.json").write_text(json.dumps(other))
    spread = swap_layout.table(tmp_path).split("Over training seeds")[1]
    assert "| decoupled_frames | test split (unseen recordings) | 1, 2 | 0.6 ± 0 | 0.8 ± 0.28 | 0.6 ± 0 |" in spread
    assert "training split" not in spread


def test_a_variant_with_one_sampling_seed_is_refused_by_name(tmp_path, monkeypatch):
    import yaml

    from experiments import seeds

    monkeypatch.setattr(seeds, "run_dir", lambda system, seed: tmp_path)
    with pytest.raises(SystemExit, match="params_style_sweep.yaml: missing"):
        swap_layout.measure("decoupled_frames", 1, None, "style_sweep")
    (tmp_path / "params_style_sweep.yaml").write_text(
        yaml.safe_dump(seeds.overrides("decoupled_frames", 1, "style_sweep"))
    )
    with pytest.raises(SystemExit, match="evaluate.seeds has one seed"):
        swap_layout.measure("decoupled_frames", 1, None, "style_sweep")
