"""Train/val/test split by clip (or by group of clips), stratified per label, deterministic under the seed."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from seap_model.config import SplitParams
from seap_model.data.corpus import Clip
from seap_model.data.manifest import SPLITS


def split_sizes(n: int, params: SplitParams) -> dict[str, int]:
    """Clips per split for a label with ``n`` clips: rounded fractions, at least one left for training."""
    val, test = int(n * params.val + 0.5), int(n * params.test + 0.5)
    while val + test > n - 1:
        if test >= val:
            test -= 1
        else:
            val -= 1
    return {"train": n - val - test, "val": val, "test": test}


def split_keys(strata: Mapping[str, str], params: SplitParams, seed: int) -> dict[str, str]:
    """Assign every key (a clip, or a group of clips) to a split, stratified by its stratum (a label).

    Each stratum is shuffled by its own generator (seeded by ``seed`` and the stratum name), so adding
    or removing keys of one stratum does not move the keys of another.
    """
    by_stratum: dict[str, list[str]] = {}
    for key in sorted(strata):
        by_stratum.setdefault(strata[key], []).append(key)
    out: dict[str, str] = {}
    for stratum, keys in sorted(by_stratum.items()):
        order = np.random.default_rng([seed, zlib.crc32(stratum.encode())]).permutation(len(keys))
        sizes = split_sizes(len(keys), params)
        start = 0
        for split in ("test", "val", "train"):
            out.update((keys[i], split) for i in order[start : start + sizes[split]])
            start += sizes[split]
    return out


def split_clips(clips: Sequence[Clip], params: SplitParams, seed: int) -> dict[str, list[Clip]]:
    """Assign every clip to exactly one split, per label; each split's clips are sorted by file."""
    assigned = split_keys({clip.file: clip.label for clip in clips}, params, seed)
    ordered = sorted(clips, key=lambda c: c.file)
    return {split: [c for c in ordered if assigned[c.file] == split] for split in SPLITS}
