"""Splits: each split gets its share of the whole collection, however small its strata; too small stops."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from seap_model.config import SplitParams, parse_params
from seap_model.data.collection import StrongClip, StrongEvent
from seap_model.data.corpus import Clip, CorpusError
from seap_model.data.manifest import SPLITS
from seap_model.data.split import allocate, split_clips, split_targets
from seap_model.data.strong_segment import assign_splits


def _clips(counts: dict[str, int]) -> list[Clip]:
    return [
        Clip(f"audio/{label}_{k:02d}.flac", Path("x"), label, label, 1.0)
        for label, n in counts.items()
        for k in range(n)
    ]


def test_split_targets_are_shares_of_the_collection_with_one_key_at_least():
    params = SplitParams(val=0.15, test=0.15)
    assert split_targets(20, params) == {"val": 3, "test": 3, "train": 14}
    assert split_targets(11, params) == {"val": 2, "test": 2, "train": 7}
    assert split_targets(3, params) == {"val": 1, "test": 1, "train": 1}  # 0.45 rounds to 0: one each anyway


@pytest.mark.parametrize("n, empty", [(2, "test"), (1, "val"), (0, "train")])
def test_a_collection_too_small_for_a_split_stops_naming_it(n, empty):
    with pytest.raises(CorpusError, match=rf"the {empty} split would be empty: {n} clips"):
        split_targets(n, SplitParams())


def test_many_small_strata_still_fill_val_and_test():
    # The reported case: 11 groups (one per source package), 1-3 keys per stratum; per-stratum rounding gave 0/0.
    counts = {f"label{i}": 1 + i % 3 for i in range(11)}
    sizes = allocate(counts, SplitParams())
    total = sum(counts.values())
    targets = split_targets(total, SplitParams())
    for split in SPLITS:
        assert sum(row[split] for row in sizes.values()) == targets[split] > 0
    for label, n in counts.items():
        assert sum(sizes[label].values()) == n
        if n >= 2:
            assert sizes[label]["train"] >= 1  # a stratum that can spare a key keeps one for training


def test_eleven_groups_of_a_real_looking_collection_get_every_split():
    """124 clips in 11 groups (one per package, one dominant label each): every split gets whole groups."""
    sizes = [20, 17, 15, 14, 12, 11, 10, 9, 7, 5, 4]
    clips = [
        StrongClip(f"pkg{g}/{k}.wav", "", f"pkg{g}", "m.jsonl:1", [StrongEvent(f"label{g % 4}", 0, 1, "e")])
        for g, n in enumerate(sizes)
        for k in range(n)
    ]
    assert len(clips) == 124
    splits = assign_splits(clips, parse_params({"seed": 0}))
    groups = {split: {c.group for c in splits[split]} for split in SPLITS}
    assert all(groups[split] for split in SPLITS), {s: len(g) for s, g in groups.items()}
    assert sum(len(g) for g in groups.values()) == 11 and len(set().union(*groups.values())) == 11


def test_assign_splits_too_few_groups_names_the_split():
    clips = [StrongClip(f"g{g}.wav", "", f"g{g}", "m.jsonl:1", [StrongEvent("dog", 0, 1, "e")]) for g in range(2)]
    with pytest.raises(CorpusError, match="the test split would be empty: 2 groups of clips"):
        assign_splits(clips, parse_params({}))


def test_split_is_stratified_deterministic_and_leak_free():
    counts = {"dog": 5, "bell": 20, "owl": 1, "cow": 2}
    clips = _clips(counts)
    splits = split_clips(clips, SplitParams(), seed=3)
    files = [c.file for split in SPLITS for c in splits[split]]
    assert sorted(files) == sorted(c.file for c in clips)  # every clip exactly once
    per_split = {split: Counter(c.label for c in splits[split]) for split in SPLITS}
    assert {split: sum(per_split[split].values()) for split in SPLITS} == {"train": 20, "val": 4, "test": 4}
    assert per_split["test"]["bell"] >= per_split["test"]["dog"]  # the biggest stratum gives the most
    assert per_split["train"]["owl"] == 1 and per_split["train"]["cow"] >= 1
    assert split_clips(list(reversed(clips)), SplitParams(), seed=3) == splits
    assert split_clips(clips, SplitParams(), seed=4) != splits


def test_a_group_never_spans_two_splits_and_is_stratified_by_its_main_label():
    """Corpus v2's SoundFont presets: one instrument at several pitches is one group, kept in one split."""
    clips = [
        Clip(f"audio/{label}_{g}_{k}.flac", Path("x"), label, label, 1.0, group=f"{label}:{g}")
        for label, groups in {"piano": 6, "harp": 3, "drum": 20}.items()
        for g in range(groups)
        for k in range(4 if label != "drum" else 1)
    ]
    splits = split_clips(clips, SplitParams(), seed=0)
    where = {c.group: split for split in SPLITS for c in splits[split]}
    for split in SPLITS:
        assert all(where[c.group] == split for c in splits[split])
    per_split = {split: {c.label for c in splits[split]} for split in SPLITS}
    assert per_split["train"] == {"piano", "harp", "drum"}
    assert sum(len(v) for v in splits.values()) == len(clips)


def test_split_shares_must_be_positive():
    from seap_model.config import ParamsError

    with pytest.raises(ParamsError, match="data.split.val"):
        parse_params({"data": {"split": {"val": 0}}})
