"""Train/val/test split by clip (or by group of clips), stratified per label, deterministic under the seed.

Each split's size is its share of the whole collection (at least one key when its fraction is above zero),
and those sizes are spread over the strata by largest remainder, so a collection of many small strata
(11 groups of 1-3 clips, say) still gets a validation and a test split. A split that cannot be filled stops
the stage with a message naming it: later stages need all three (val: fine-tune validation; test: evaluate
and generate).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from seap_model.config import SplitParams
from seap_model.data.corpus import Clip, CorpusError
from seap_model.data.manifest import SPLITS

HELD_OUT = ("test", "val")  # filled in this order; what is left is train
NEEDED_BY = {"train": "every later stage", "val": "the fine-tune validation", "test": "evaluate and generate"}


def split_targets(n: int, params: SplitParams, unit: str = "clips") -> dict[str, int]:
    """Keys per split for a collection of ``n`` keys: rounded shares, at least one key per split.

    Raises CorpusError naming the split when ``n`` keys cannot give every split at least one.
    """
    sizes = {split: max(1, int(n * getattr(params, split) + 0.5)) for split in HELD_OUT}
    while sizes["val"] + sizes["test"] > max(n - 1, 0) and max(sizes.values()) > 0:
        larger = "test" if sizes["test"] >= sizes["val"] else "val"
        sizes[larger] -= 1
    sizes["train"] = n - sizes["val"] - sizes["test"]
    for split in SPLITS:
        if sizes[split] <= 0:
            share = 1.0 - params.val - params.test if split == "train" else getattr(params, split)
            raise CorpusError(
                f"data.split: the {split} split would be empty: {n} {unit} cannot fill train, val and test "
                f"({NEEDED_BY[split]} needs the {split} split; its share is {share:.2f}). Add {unit}"
            )
    return sizes


def allocate(counts: Mapping[str, int], params: SplitParams, unit: str = "clips") -> dict[str, dict[str, int]]:
    """Keys of each stratum per split: the collection's split sizes spread by largest remainder.

    A stratum keeps at least one key for training while another stratum can give one instead; only a
    collection of (mostly) single-key strata gives up a stratum's last key.
    """
    total = sum(counts.values())
    targets = split_targets(total, params, unit)
    left = dict(counts)
    out = {s: {split: 0 for split in SPLITS} for s in counts}
    for split in HELD_OUT:
        quota = {s: targets[split] * n / total for s, n in counts.items()}
        for s in counts:
            out[s][split] = min(math.floor(quota[s]), max(left[s] - 1, 0))
        missing = targets[split] - sum(out[s][split] for s in counts)
        for spare in (1, 0):  # first from strata that keep a training key, then from any stratum
            while missing > 0:
                able = [s for s in counts if left[s] - out[s][split] > spare]
                if not able:
                    break
                best = max(able, key=lambda s: (quota[s] - out[s][split], counts[s], s))
                out[best][split] += 1
                missing -= 1
        for s in counts:
            left[s] -= out[s][split]
    for s in counts:
        out[s]["train"] = left[s]
    return out


def split_keys(strata: Mapping[str, str], params: SplitParams, seed: int, unit: str = "clips") -> dict[str, str]:
    """Assign every key (a clip, or a group of clips) to a split, stratified by its stratum (a label).

    Each stratum is shuffled by its own generator (seeded by ``seed`` and the stratum name), so which of a
    stratum's keys go to test, val and train depends only on that stratum and how many it gives to each.
    """
    by_stratum: dict[str, list[str]] = {}
    for key in sorted(strata):
        by_stratum.setdefault(strata[key], []).append(key)
    sizes = allocate({s: len(keys) for s, keys in by_stratum.items()}, params, unit)
    out: dict[str, str] = {}
    for stratum, keys in sorted(by_stratum.items()):
        order = np.random.default_rng([seed, zlib.crc32(stratum.encode())]).permutation(len(keys))
        start = 0
        for split in ("test", "val", "train"):
            out.update((keys[i], split) for i in order[start : start + sizes[stratum][split]])
            start += sizes[stratum][split]
    return out


def split_clips(clips: Sequence[Clip], params: SplitParams, seed: int) -> dict[str, list[Clip]]:
    """Assign every clip to exactly one split with all of its group, stratified by each group's most common label
    (ties: the alphabetically first); each split's clips are sorted by file."""
    labels: dict[str, Counter] = {}
    for clip in clips:
        labels.setdefault(clip.group, Counter())[clip.label] += 1
    strata = {group: min(counts, key=lambda label: (-counts[label], label)) for group, counts in labels.items()}
    unit = "clips" if all(clip.group == clip.file for clip in clips) else "groups of clips"
    assigned = split_keys(strata, params, seed, unit=unit)
    ordered = sorted(clips, key=lambda c: c.file)
    return {split: [c for c in ordered if assigned[c.group] == split] for split in SPLITS}
