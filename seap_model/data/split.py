"""Train/val/test split of source clips: by clip, stratified per label, deterministic under the seed."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

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


def split_clips(clips: Sequence[Clip], params: SplitParams, seed: int) -> dict[str, list[Clip]]:
    """Assign every clip to exactly one split, per label; each split's clips are sorted by file.

    Each label is shuffled by its own generator (seeded by ``seed`` and the label name), so adding
    or removing clips of one label does not move the clips of another.
    """
    by_label: dict[str, list[Clip]] = {}
    for clip in sorted(clips, key=lambda c: c.file):
        by_label.setdefault(clip.label, []).append(clip)
    out: dict[str, list[Clip]] = {split: [] for split in SPLITS}
    for label, group in sorted(by_label.items()):
        order = np.random.default_rng([seed, zlib.crc32(label.encode())]).permutation(len(group))
        sizes = split_sizes(len(group), params)
        start = 0
        for split in ("test", "val", "train"):
            out[split] += [group[i] for i in order[start : start + sizes[split]]]
            start += sizes[split]
    return {split: sorted(out[split], key=lambda c: c.file) for split in SPLITS}
