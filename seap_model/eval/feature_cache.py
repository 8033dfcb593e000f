"""A feature cache that cannot go stale: entries are keyed by the clip's content (its samples and rate), the
evaluator's name and version and the kind of feature, never by a file name. A regenerated folder whose clips
changed therefore misses the cache (audioldm_eval reuses features of a folder by its path; this cannot).

Layout: ``<root>/<evaluator>/<version>/<kind>/<sha[:2]>/<sha>.npy``, each written under a temporary name and
renamed, so a killed run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

KINDS = ("embedding", "posteriors")


class FeatureCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hits = self.misses = 0

    @staticmethod
    def clip_key(wave, sample_rate: int) -> str:
        samples = np.ascontiguousarray(np.asarray(wave, dtype=np.float32))
        return hashlib.sha256(f"{sample_rate}:{samples.shape}".encode() + samples.tobytes()).hexdigest()

    def path(self, evaluator, kind: str, key: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"feature kind must be one of {KINDS}, got {kind!r}")
        return self.root / evaluator.name / evaluator.version / kind / key[:2] / f"{key}.npy"

    def features(self, evaluator, wave, sample_rate: int, kind: str = "embedding") -> np.ndarray:
        """``evaluator``'s ``kind`` features of ``wave``, from the cache when this exact clip was seen before."""
        path = self.path(evaluator, kind, self.clip_key(wave, sample_rate))
        if path.is_file():
            self.hits += 1
            return np.load(path)
        self.misses += 1
        value = np.asarray(getattr(evaluator, kind)(wave, sample_rate), dtype=np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial.npy")
        np.save(tmp, value)
        os.replace(tmp, path)
        return value
