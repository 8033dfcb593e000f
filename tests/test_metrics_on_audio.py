"""Every evaluation metric on real audio moves the right way as noise is added, and bad clips are handled:
short and silent clips are padded (YAMNet's rule: at least one 0.96 s patch, zeros after the clip), a NaN clip
is rejected naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seap_model.audio import AudioError, fit_length, load_audio
from seap_model.eval.evaluators import YAMNetEvaluator
from seap_model.eval.feature_cache import FeatureCache
from seap_model.eval.labels import load_label_table
from seap_model.eval.scoring import Backends, distribution_metrics, featurise, per_item

ROOT = Path(__file__).resolve().parents[1]
CLIPS = sorted((ROOT / "data/sound_events/audio").glob("*_01.flac"))[:16]
SR = 16000


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    yamnet = YAMNetEvaluator()
    backends = Backends(
        yamnet=yamnet, style=yamnet, class_names=yamnet.class_names, label_table=load_label_table(), top_k=10
    )
    cache = FeatureCache(tmp_path_factory.mktemp("features"))
    waves = [fit_length(load_audio(p, SR), 2 * SR).numpy() for p in CLIPS]
    labels = [p.name.rsplit("_", 1)[0] for p in CLIPS]
    return backends, cache, waves, labels


def _noisy(waves, snr_db: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for w in waves:
        noise = rng.normal(size=w.shape).astype(np.float32)
        scale = np.sqrt((w**2).mean() / (noise**2).mean() / 10 ** (snr_db / 10))
        out.append((w + scale * noise).astype(np.float32))
    return out


def test_metrics_move_the_right_way_as_noise_is_added(setting):
    backends, cache, waves, labels = setting
    assert len(waves) == 16 and len(set(labels)) >= 12
    real = featurise(backends, cache, waves, SR)
    rows = []
    for snr in (30.0, 5.0, -10.0):
        noisy = featurise(backends, cache, _noisy(waves, snr), SR)
        rows.append({**distribution_metrics(noisy, real), **per_item(backends, noisy, real, real.style, labels)})
    for key in ("fd_yamnet", "kid_yamnet", "kad_yamnet", "kl_softmax_yamnet", "kl_sigmoid_yamnet"):
        values = [r[key] for r in rows]
        assert values[0] < values[1] < values[2], (key, values)  # further from the clean clips
    style = [float(r["style"].mean()) for r in rows]  # similarity to the clean clip falls
    assert style[0] > style[1] > style[2], style
    hits = [float(r["hit"].mean()) for r in rows]
    assert hits[0] >= hits[2] and hits[0] > 0.4, hits  # the label is lost in the noise
    assert rows[2]["is_yamnet"] < rows[0]["is_yamnet"]  # everything sounds like one thing: noise


def test_short_and_silent_clips_are_padded_and_a_nan_clip_is_named(setting):
    backends, cache, waves, _ = setting
    short = waves[0][: int(0.3 * SR)]
    silent = np.zeros(SR, dtype=np.float32)
    clips = featurise(backends, cache, [short, silent], SR)
    assert np.isfinite(clips.style).all() and clips.style.shape == (2, 1024)
    padded = np.concatenate([short, np.zeros(int(0.66 * SR), dtype=np.float32)])  # YAMNet pads with zeros itself
    np.testing.assert_allclose(backends.yamnet.embedding(padded, SR), clips.style[0], atol=1e-5)
    bad = waves[1].copy()
    bad[5] = np.nan
    with pytest.raises(AudioError, match="clip test_0007_bell: .*NaN"):
        featurise(backends, cache, [waves[0], bad], SR, names=["test_0001_dog", "test_0007_bell"])
