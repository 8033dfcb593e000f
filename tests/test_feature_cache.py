"""The feature cache is keyed by content, evaluator and version: a regenerated clip never reads a stale entry."""

from __future__ import annotations

import numpy as np
import pytest

from seap_model.eval.feature_cache import FeatureCache


class CountingEvaluator:
    name, version = "fake", "1"

    def __init__(self):
        self.calls = 0

    def embedding(self, wave, sample_rate):
        self.calls += 1
        return np.array([float(np.mean(wave)), float(sample_rate)])


def test_same_content_hits_changed_content_or_version_misses(tmp_path):
    cache, evaluator = FeatureCache(tmp_path), CountingEvaluator()
    clip = np.linspace(-1, 1, 1000, dtype=np.float32)
    first = cache.features(evaluator, clip, 16000)
    np.testing.assert_array_equal(cache.features(evaluator, clip.copy(), 16000), first)
    assert evaluator.calls == 1 and (cache.hits, cache.misses) == (1, 1)
    # The folder is "regenerated": same file name elsewhere, new audio. The key is the content, so it misses.
    regenerated = clip + 0.5
    assert cache.features(evaluator, regenerated, 16000)[0] == pytest.approx(0.5)
    assert cache.features(evaluator, clip, 8000)[1] == 8000  # same samples at another rate: another clip
    newer = CountingEvaluator()
    newer.version = "2"
    cache.features(newer, clip, 16000)
    assert newer.calls == 1  # a new evaluator version never reads the old entries
    assert not list(tmp_path.rglob("*.partial.npy"))
    with pytest.raises(ValueError, match="feature kind"):
        cache.features(evaluator, clip, 16000, kind="logits")
