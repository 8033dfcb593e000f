"""What each evaluation protocol pairs: prompt, reference and the real target it is scored against.

Every item is one (test scene, label) pair: the label's caption is the prompt and the test scene is the real
target. The protocols differ in the reference they give:

* ``paper``: the reference cut from the target scene itself (what the paper reports). It shares its recording
  with the target, so "sounds like the reference" can be reached by copying the target's recording.
* ``transfer`` (the headline): a reference of the same label cut from a **different recording** than any the
  target scene uses for that label, taken from the validation split (held out from training, like the test
  split, and split by recording, so its recordings never occur in test scenes). ``alternative`` is a second
  reference of the label from yet another recording where the corpus has one (else another crop of a recording
  other than ``transfer``'s), for the ratio "how much does swapping the reference move the output".
* ``conflict``: a reference of another label M (the prompt says L): does the output follow the text or the
  reference?
* ``unseen``: the paper protocol with a paraphrased caption that never occurs in training (a small table).

``evaluate.split: train`` builds the same items from training scenes, with every reference drawn from the
training split too (``reference_pools``): the seen-recordings control for the transfer protocol.

Choices are deterministic (the n-th item of a label takes the n-th candidate in turn), so every system and
seed sees the same pairs.
"""

from __future__ import annotations

import csv
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seap_model.data.manifest import Scene, read_labels, read_manifest
from seap_model.errors import SeapError


class ProtocolError(SeapError, ValueError):
    """The split cannot support a protocol (e.g. a label with a single recording); the message says which. A
    SeapError, so ``seap evaluate`` prints it on one line and exits 2; still a ValueError for older callers."""


@dataclass(frozen=True)
class RefClip:
    """A reference clip of a SERST split and the source recordings its spans were cut from."""

    path: Path
    label: str
    scene: str
    recordings: frozenset[str]
    onset: float  # of its first span in the scene (s)


@dataclass(frozen=True)
class EvalItem:
    """One test (scene, label) pair with the reference each protocol gives it."""

    id: str
    label: str
    prompt: str
    scene_audio: Path
    start: float  # where the target crop starts (just before the label's first span)
    target_recordings: frozenset[str]
    paper: RefClip
    transfer: RefClip | None
    alternative: RefClip | None
    conflict: RefClip | None


def _overlapping(scene: Scene, label: str, spans) -> set[str]:
    return {
        e.source
        for e in scene.events
        if e.label == label and any(e.onset < end and start < e.offset for start, end in spans)
    }


def reference_clips(scene: Scene, split: dict[str, Scene] | None = None) -> list[RefClip]:
    """The first reference of each label in a scene, with the recordings of that label's events its spans
    overlap, here and in the scenes of ``split`` it borrowed spans from (``data.references.pad_from_other_clips``)."""
    clips, seen = [], set()
    for ref in scene.references:
        if ref.label in seen:
            continue
        seen.add(ref.label)
        sources = _overlapping(scene, ref.label, ref.spans)
        for scene_id, onset, offset in ref.borrowed or []:
            if split is None or scene_id not in split:
                raise ProtocolError(f"scene {scene.id}: reference {ref.audio} borrows from unknown scene {scene_id}")
            sources |= _overlapping(split[scene_id], ref.label, [(onset, offset)])
        clips.append(RefClip(scene.path(ref.audio), ref.label, scene.id, frozenset(sources), ref.spans[0][0]))
    return clips


def _pick(candidates: list[RefClip], turn: int) -> RefClip | None:
    return candidates[turn % len(candidates)] if candidates else None


def split_references(serst_dir: str | Path, split: str) -> dict[str, list[RefClip]]:
    """Every scene's reference clips of a split, by label."""
    by_label: dict[str, list[RefClip]] = defaultdict(list)
    scenes = {scene.id: scene for scene in read_manifest(Path(serst_dir) / f"{split}.jsonl")}
    for scene in scenes.values():
        for clip in reference_clips(scene, scenes):
            by_label[clip.label].append(clip)
    return dict(by_label)


def other_recordings(clip: RefClip, pools: list[dict[str, list[RefClip]]]) -> list[RefClip]:
    """References of ``clip``'s label in ``pools`` cut from none of its recordings."""
    return [c for pool in pools for c in pool.get(clip.label, []) if not c.recordings & clip.recordings]


def reference_pools(serst_dir: str | Path, split: str = "test") -> list[dict[str, list[RefClip]]]:
    """The reference pools items of ``split`` draw from; the first holds their transfer references.

    ``test``: val (held out from training, split by recording), then test. ``train``: the training split itself,
    so every reference is from a recording the model was trained on (seen against unseen references tells
    whether it fails to follow references at all or fails to generalise past the recordings it saw)."""
    if split not in ("test", "train"):
        raise ProtocolError(f"evaluate.split: expected test or train, got {split!r}")
    names = ("val", "test") if split == "test" else ("train",)
    return [defaultdict(list, split_references(serst_dir, name)) for name in names]


def spread_indices(count: int, wanted: int) -> list[int]:
    """``wanted`` of ``count`` positions spread evenly over a split (so every part of it, and most labels, are in)."""
    return sorted({int(i) for i in np.linspace(0, count - 1, min(wanted, count))})


def build_items(serst_dir: str | Path, max_items: int | None = None, split: str = "test") -> list[EvalItem]:
    """Items of ``split`` (test, or train: see ``reference_pools``), each with its paper, transfer,
    alternative and conflict reference; ``max_items`` of them spread evenly over the split (scenes come in
    corpus order, so a prefix would hold only its first labels)."""
    serst_dir = Path(serst_dir)
    captions = read_labels(serst_dir)
    pools = reference_pools(serst_dir, split)
    pool = pools[0]
    scenes = read_manifest(serst_dir / f"{split}.jsonl")
    by_id = {scene.id: scene for scene in scenes}
    labels = sorted(label for label in captions if pool.get(label))  # a conflict needs a reference of its label
    items, turns = [], defaultdict(int)
    for scene in scenes:
        for paper in reference_clips(scene, by_id):
            label, turn = paper.label, turns[paper.label]
            turns[label] += 1
            own = {e.source for e in scene.events if e.label == label}
            transfer = _pick([c for c in pool[label] if not c.recordings & own], turn)
            alternative = None
            if transfer is not None:
                others = other_recordings(transfer, pools)
                away = [c for c in others if not c.recordings & own]  # prefer a recording the target lacks too
                alternative = _pick(away or others, turn)
            conflict = None
            if (
                len(labels) > 1 and label in labels
            ):  # another label, in a per-item rotation, so every other label serves as a conflict
                shift = 1 + zlib.crc32(scene.id.encode()) % (len(labels) - 1)
                conflict = _pick(pool[labels[(labels.index(label) + shift) % len(labels)]], turn)
            items.append(
                EvalItem(
                    id=f"{scene.id}_{label}",
                    label=label,
                    prompt=captions[label],
                    scene_audio=scene.path(scene.audio),
                    start=max(0.0, paper.onset - 0.1),
                    target_recordings=frozenset(own),
                    paper=paper,
                    transfer=transfer,
                    alternative=alternative,
                    conflict=conflict,
                )
            )
    if not items:
        raise ProtocolError(f"{serst_dir}/{split}.jsonl has no items with a reference to evaluate")
    return [items[i] for i in spread_indices(len(items), max_items)] if max_items is not None else items


def load_unseen_captions(path: str | Path, labels: list[str], training_captions: set[str]) -> dict[str, list[str]]:
    """``label,caption`` rows: at least 3 per label, none containing a caption the model was trained on
    (``training_captions``, lower case: the label captions scene captions are built from)."""
    path = Path(path)
    table: dict[str, list[str]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["label", "caption"]:
            raise ProtocolError(f"{path}: expected columns label,caption, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            label, caption = (row["label"] or "").strip(), (row["caption"] or "").strip()
            if not label or not caption:
                raise ProtocolError(f"{path}:{line}: a row needs a label and a caption")
            seen = [c for c in training_captions if c in caption.lower()]
            if seen:
                raise ProtocolError(f"{path}:{line}: {caption!r} contains the training caption {seen[0]!r}")
            table[label].append(caption)
    short = [label for label in labels if len(table.get(label, [])) < 3]
    if short:
        raise ProtocolError(f"{path}: fewer than 3 unseen captions for {', '.join(short)}")
    return dict(table)


def unseen_prompt(item: EvalItem, table: dict[str, list[str]]) -> str:
    """The paraphrase an item gets (chosen by a hash of its id, so the label's paraphrases are all used)."""
    options = table[item.label]
    return options[zlib.crc32(item.id.encode()) % len(options)]
