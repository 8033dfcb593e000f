"""Evaluation protocols (seap_model/eval/protocols.py): which reference each (test scene, label) item gets.

A tiny synthetic SERST folder in tmp_path fixes which recordings exist, so the tests can check the recording
rules (transfer from another recording than the target's, alternative from another than the transfer's).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from seap_model.data.manifest import read_labels, read_manifest
from seap_model.eval.protocols import (
    EvalItem,
    ProtocolError,
    build_items,
    load_unseen_captions,
    other_recordings,
    reference_clips,
    reference_pools,
    split_references,
    unseen_prompt,
)

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = {"bell": "a bell ringing", "dog": "a dog barking", "owl": "an owl hooting", "rain": "rain falling"}


def event(label: str, onset: float, offset: float, recording: str) -> dict:
    return {"label": label, "onset": onset, "offset": offset, "source": f"audio/{recording}.flac"}


def scene(
    scene_id: str, events: list[dict], borrowed: dict[str, list] | None = None, spans: dict[str, list] | None = None
) -> dict:
    """A scene row whose reference of each label spans that label's events (in the order they first occur),
    or the given ``spans``."""
    split = scene_id.split("_")[0]
    refs, order = [], []
    for e in events:
        if e["label"] not in order:
            order.append(e["label"])
    for label in order:
        ref = {
            "label": label,
            "audio": f"references/{split}/{scene_id}_{label}_0.wav",
            "spans": (spans or {}).get(label) or [[e["onset"], e["offset"]] for e in events if e["label"] == label],
        }
        if borrowed and label in borrowed:
            ref["borrowed"] = borrowed[label]
        refs.append(ref)
    return {
        "id": scene_id,
        "split": split,
        "audio": f"audio/{split}/{scene_id}.wav",
        "duration": 4.0,
        "caption": "a scene",
        "events": events,
        "references": refs,
    }


def write_serst(root: Path, captions: dict[str, str], splits: dict[str, list[dict]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    labels = sorted(captions)
    (root / "labels.json").write_text(json.dumps({"labels": labels, "captions": captions}))
    for split in ("train", "val", "test"):
        rows = splits.get(split, [])
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def standard_splits() -> dict[str, list[dict]]:
    """Three test scenes and five val scenes. ``val_1`` reuses test_0's dog recording (dog_A) and ``val_4``
    test_1's second dog recording (dog_E), which test_1's dog reference does not overlap: a transfer reference
    must skip both (the rotation would otherwise pick them: val_1 first for test_0, val_4 second for test_1)."""
    return {
        "test": [
            scene("test_0", [event("dog", 0.5, 1.5, "dog_A"), event("bell", 1.0, 3.0, "bell_A")]),
            scene(
                "test_1",
                [
                    event("dog", 0.0, 1.0, "dog_B"),
                    event("rain", 0.2, 3.8, "rain_A"),
                    event("dog", 2.0, 3.0, "dog_E"),
                ],
                spans={"dog": [[0.0, 1.0]]},
            ),
            scene("test_2", [event("bell", 0.3, 2.0, "bell_B")]),
        ],
        "val": [
            scene("val_1", [event("dog", 0.2, 1.8, "dog_A")]),
            scene("val_4", [event("dog", 1.0, 2.0, "dog_E")]),
            scene("val_0", [event("dog", 0.1, 1.1, "dog_C"), event("bell", 1.5, 2.5, "bell_C")]),
            scene("val_2", [event("dog", 0.4, 1.4, "dog_D"), event("rain", 0.0, 4.0, "rain_B")]),
            scene("val_3", [event("rain", 0.0, 4.0, "rain_C"), event("bell", 2.0, 3.0, "bell_D")]),
        ],
        "train": [scene("train_0", [event("dog", 0.0, 1.0, "dog_T")])],
    }


@pytest.fixture
def serst(tmp_path) -> Path:
    return write_serst(tmp_path / "serst", {k: CAPTIONS[k] for k in ("bell", "dog", "rain")}, standard_splits())


def label_recordings(serst_dir: Path, split: str) -> dict[str, dict[str, set[str]]]:
    """scene id -> label -> every recording the scene's events of that label use (read independently)."""
    out: dict[str, dict[str, set[str]]] = {}
    for s in read_manifest(serst_dir / f"{split}.jsonl"):
        for e in s.events:
            out.setdefault(s.id, {}).setdefault(e.label, set()).add(e.source)
    return out


# ---------------------------------------------------------------- reference_clips / split_references


def test_reference_clips_take_the_first_reference_per_label_with_the_recordings_it_overlaps(serst):
    test_1 = read_manifest(serst / "test.jsonl")[1]
    clips = {c.label: c for c in reference_clips(test_1)}
    assert set(clips) == {"dog", "rain"}
    assert clips["dog"].recordings == {"audio/dog_B.flac"}  # its span misses the dog_E event
    assert clips["rain"].recordings == {"audio/rain_A.flac"}
    assert clips["dog"].scene == "test_1"
    assert clips["dog"].onset == 0.0
    assert clips["dog"].path == serst / "references/test/test_1_dog_0.wav"


def test_reference_clip_ignores_events_outside_its_spans_and_later_references_of_the_label(tmp_path):
    row = scene("test_0", [event("dog", 0.0, 1.0, "dog_A"), event("dog", 2.0, 3.0, "dog_B")])
    row["references"] = [
        {"label": "dog", "audio": "references/test/a.wav", "spans": [[0.0, 1.0]]},
        {"label": "dog", "audio": "references/test/b.wav", "spans": [[2.0, 3.0]]},
    ]
    root = write_serst(tmp_path / "s", {"dog": "a dog barking"}, {"test": [row]})
    (clip,) = reference_clips(read_manifest(root / "test.jsonl")[0])
    assert clip.path.name == "a.wav"
    assert clip.recordings == {"audio/dog_A.flac"}


def test_split_references_groups_every_scene_by_label(serst):
    pool = split_references(serst, "val")
    assert sorted(pool) == ["bell", "dog", "rain"]
    assert [c.scene for c in pool["dog"]] == ["val_1", "val_4", "val_0", "val_2"]
    assert [c.scene for c in pool["bell"]] == ["val_0", "val_3"]
    assert all(c.label == label for label, clips in pool.items() for c in clips)


def test_other_recordings_excludes_every_clip_sharing_a_recording(serst):
    pool = split_references(serst, "val")
    test_refs = split_references(serst, "test")
    dog_a = next(c for c in test_refs["dog"] if c.scene == "test_0")
    others = other_recordings(dog_a, [pool, test_refs])
    assert {c.scene for c in others} == {"val_0", "val_2", "val_4", "test_1"}  # not val_1 (dog_A), not itself
    assert all(not (c.recordings & dog_a.recordings) for c in others)


# ---------------------------------------------------------------- build_items


def test_every_test_scene_and_label_is_one_item_with_its_caption_as_prompt(serst):
    items = build_items(serst)
    assert [i.id for i in items] == ["test_0_dog", "test_0_bell", "test_1_dog", "test_1_rain", "test_2_bell"]
    assert all(i.prompt == CAPTIONS[i.label] for i in items)
    assert all(isinstance(i, EvalItem) for i in items)


def test_paper_reference_is_the_target_scenes_own(serst):
    own = {(s.id, r.label): s.path(r.audio) for s in read_manifest(serst / "test.jsonl") for r in s.references}
    for item in build_items(serst):
        scene_id = item.id.removesuffix(f"_{item.label}")
        assert item.paper.scene == scene_id
        assert item.paper.label == item.label
        assert item.paper.path == own[scene_id, item.label]
        assert item.scene_audio == serst / f"audio/test/{scene_id}.wav"
        assert item.start == pytest.approx(max(0.0, item.paper.onset - 0.1))
    by_id = {i.id: i for i in build_items(serst)}
    assert by_id["test_0_dog"].paper.onset == 0.5 and by_id["test_0_dog"].start == pytest.approx(0.4)
    assert by_id["test_1_dog"].start == 0.0  # never before the scene starts


def test_transfer_is_cut_from_a_recording_no_event_of_the_label_in_the_target_uses(serst):
    target = label_recordings(serst, "test")
    val_ids = {s.id for s in read_manifest(serst / "val.jsonl")}
    items = build_items(serst)
    for item in items:
        scene_id = item.id.removesuffix(f"_{item.label}")
        assert item.target_recordings == target[scene_id][item.label]
        assert item.transfer is not None, item.id
        assert item.transfer.label == item.label
        assert item.transfer.scene in val_ids  # held out from training, never the test split
        assert not item.transfer.recordings & target[scene_id][item.label], item.id
        assert item.transfer.recordings  # a real recording, not a reference that overlaps no event
    by_id = {i.id: i for i in items}
    # test_0's dog is dog_A: skip val_1; test_1's dogs are dog_B and dog_E (outside its reference): skip val_4
    assert by_id["test_0_dog"].transfer.scene == "val_4"
    assert by_id["test_1_dog"].transfer.scene == "val_0"
    assert by_id["test_1_dog"].target_recordings == {"audio/dog_B.flac", "audio/dog_E.flac"}


def test_transfer_rotates_over_the_candidates_of_a_label(serst):
    items = build_items(serst)
    bells = [i for i in items if i.label == "bell"]
    # bell candidates in val: val_0 (bell_C) and val_3 (bell_D), neither used by the test scenes
    assert [i.transfer.scene for i in bells] == ["val_0", "val_3"]


def test_alternative_shares_no_recording_with_the_transfer(serst):
    for item in build_items(serst):
        assert item.alternative is not None, item.id
        assert item.alternative.label == item.label
        assert not item.alternative.recordings & item.transfer.recordings, item.id
        assert item.alternative.path != item.transfer.path


def test_alternative_prefers_a_recording_the_target_lacks_too(serst):
    for item in build_items(serst):
        assert not item.alternative.recordings & item.target_recordings, item.id


def test_conflict_reference_has_another_label(serst):
    items = build_items(serst)
    val_ids = {s.id for s in read_manifest(serst / "val.jsonl")}
    for item in items:
        assert item.conflict is not None, item.id
        assert item.conflict.label != item.label
        assert item.conflict.label in CAPTIONS
        assert item.conflict.scene in val_ids


def test_choices_are_deterministic(serst):
    first, second = build_items(serst), build_items(serst)
    assert first == second
    assert [(i.transfer, i.alternative, i.conflict) for i in first] == [
        (i.transfer, i.alternative, i.conflict) for i in second
    ]


def test_max_items_takes_items_spread_over_the_split(serst):
    every = build_items(serst)
    assert len(every) > 2
    assert build_items(serst, max_items=2) == [every[0], every[-1]]
    assert build_items(serst, max_items=100) == every
    assert build_items(serst, max_items=None) == every


def test_an_empty_test_split_raises_protocol_error(tmp_path):
    splits = standard_splits()
    splits["test"] = []
    root = write_serst(tmp_path / "s", {k: CAPTIONS[k] for k in ("bell", "dog", "rain")}, splits)
    with pytest.raises(ProtocolError, match="test.jsonl"):
        build_items(root)


def test_a_test_split_without_references_raises_protocol_error(tmp_path):
    splits = standard_splits()
    for row in splits["test"]:
        row["references"] = []
    root = write_serst(tmp_path / "s", {k: CAPTIONS[k] for k in ("bell", "dog", "rain")}, splits)
    with pytest.raises(ProtocolError):
        build_items(root)


def test_a_label_with_a_single_recording_gets_no_transfer(tmp_path):
    """owl has one recording overall (owl_A), even present in val: no transfer (nor alternative) exists."""
    splits = standard_splits()
    splits["test"].append(scene("test_3", [event("owl", 0.5, 2.5, "owl_A"), event("dog", 0.0, 1.0, "dog_F")]))
    splits["val"].append(scene("val_5", [event("owl", 1.0, 2.0, "owl_A")]))
    root = write_serst(tmp_path / "s", {k: CAPTIONS[k] for k in ("bell", "dog", "owl", "rain")}, splits)
    by_id = {i.id: i for i in build_items(root)}
    assert by_id["test_3_owl"].transfer is None
    assert by_id["test_3_owl"].alternative is None
    assert by_id["test_3_owl"].paper.scene == "test_3"
    assert by_id["test_3_dog"].transfer is not None  # the other label of that scene is unaffected


def test_a_label_only_in_test_gets_no_transfer(tmp_path):
    splits = standard_splits()
    splits["test"].append(scene("test_3", [event("owl", 0.5, 2.5, "owl_A")]))
    root = write_serst(tmp_path / "s", {k: CAPTIONS[k] for k in ("bell", "dog", "owl", "rain")}, splits)
    (owl,) = [i for i in build_items(root) if i.label == "owl"]
    assert owl.transfer is None and owl.alternative is None


def test_a_corpus_of_one_label_builds_items_without_a_conflict_reference(tmp_path):
    """build_items guards ``conflict`` with ``len(labels) > 1``, but computes the rotation ``% (len(labels) - 1)``
    before that guard: a one-label corpus must give conflict None, not ZeroDivisionError."""
    splits = {
        "test": [scene("test_0", [event("dog", 0.5, 1.5, "dog_A")])],
        "val": [scene("val_0", [event("dog", 0.1, 1.1, "dog_C")]), scene("val_1", [event("dog", 0.0, 1.0, "dog_D")])],
    }
    root = write_serst(tmp_path / "s", {"dog": "a dog barking"}, splits)
    (item,) = build_items(root)
    assert item.conflict is None
    assert item.transfer is not None and item.transfer.scene == "val_0"


def test_alternative_shares_no_recording_with_the_transfer_when_references_borrow_spans(tmp_path):
    """With ``data.references.pad_from_other_clips`` a reference's audio also holds ``borrowed`` spans of other
    scenes of its split. val_0's dog reference (dog_C) borrows a span of val_1 (dog_D), so its audio contains
    dog_D; an alternative cut from dog_D then shares a recording with the transfer it is compared against."""
    splits = {
        "test": [scene("test_0", [event("dog", 0.5, 1.5, "dog_A"), event("bell", 1.0, 3.0, "bell_A")])],
        "val": [
            scene("val_0", [event("dog", 0.1, 1.1, "dog_C")], borrowed={"dog": [["val_1", 0.0, 1.0]]}),
            scene("val_1", [event("dog", 0.0, 1.0, "dog_D"), event("bell", 1.0, 2.0, "bell_C")]),
        ],
    }
    root = write_serst(tmp_path / "s", {"bell": "a bell ringing", "dog": "a dog barking"}, splits)
    events = {s.id: s.events for s in read_manifest(root / "val.jsonl")}
    refs = {(s.id, r.label): r for s in read_manifest(root / "val.jsonl") for r in s.references}

    def audio_recordings(clip) -> set[str]:
        """Every recording the clip's audio holds: its own spans' and its borrowed spans'."""
        ref = refs[clip.scene, clip.label]
        spans = [(clip.scene, a, b) for a, b in ref.spans] + [tuple(b) for b in ref.borrowed]
        return {
            e.source
            for scene_id, a, b in spans
            for e in events[scene_id]
            if e.label == clip.label and e.onset < b and a < e.offset
        }

    (dog,) = [i for i in build_items(root) if i.label == "dog"]
    assert dog.transfer is not None and dog.alternative is not None
    assert not audio_recordings(dog.transfer) & dog.alternative.recordings


# ---------------------------------------------------------------- the shipped split


@pytest.fixture(scope="module")
def shipped_serst(tmp_path_factory) -> Path:
    """SERST built from the shipped corpus with the shipped params (download + segment, ~10 s), in tmp."""
    from seap_model.config import load_params
    from tests.runner import run_stage

    out = tmp_path_factory.mktemp("shipped")
    params = load_params(ROOT / "params.yaml")
    data = params.data.model_copy(
        update={
            "corpus": str(ROOT / params.data.corpus),
            "raw_dir": str(out / "raw"),
            "serst_dir": str(out / "serst"),
            "report_dir": str(out / "report"),
        }
    )
    params = params.model_copy(update={"data": data})
    run_stage("download", params)
    run_stage("segment", params)
    return out / "serst"


def test_shipped_split_transfer_references_avoid_the_target_recordings(shipped_serst):
    serst = shipped_serst
    target = label_recordings(serst, "test")
    items = build_items(serst)
    assert len(items) > 0
    for item in items:
        scene_id = item.id.removesuffix(f"_{item.label}")
        assert item.transfer is not None
        assert not item.transfer.recordings & target[scene_id][item.label], item.id
        assert item.alternative is not None
        assert not item.alternative.recordings & item.transfer.recordings, item.id
        assert item.conflict is not None and item.conflict.label != item.label


# ---------------------------------------------------------------- unseen captions


def write_csv(path: Path, rows: list[tuple[str, str]], header=("label", "caption")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


TRAINING = {c.lower() for c in CAPTIONS.values()}
GOOD = [
    ("dog", "a hound yelps"),
    ("dog", "a puppy woofs twice"),
    ("dog", "a canine growls then yaps"),
    ("rain", "a downpour on a tin roof"),
    ("rain", "drizzle patters on leaves"),
    ("rain", "a storm drenches the street"),
]


def test_unseen_captions_load_by_label(tmp_path):
    table = load_unseen_captions(write_csv(tmp_path / "u.csv", GOOD), ["dog", "rain"], TRAINING)
    assert table == {
        "dog": ["a hound yelps", "a puppy woofs twice", "a canine growls then yaps"],
        "rain": ["a downpour on a tin roof", "drizzle patters on leaves", "a storm drenches the street"],
    }


def test_fewer_than_three_captions_for_a_label_names_the_label(tmp_path):
    path = write_csv(tmp_path / "u.csv", GOOD[:5])  # rain has 2
    with pytest.raises(ProtocolError, match="fewer than 3") as err:
        load_unseen_captions(path, ["dog", "rain"], TRAINING)
    assert "rain" in str(err.value) and "dog" not in str(err.value)


def test_a_label_with_no_captions_at_all_is_named(tmp_path):
    path = write_csv(tmp_path / "u.csv", GOOD)
    with pytest.raises(ProtocolError, match="bell"):
        load_unseen_captions(path, ["bell", "dog", "rain"], TRAINING)


def test_a_caption_containing_a_training_caption_names_file_and_line(tmp_path):
    rows = [*GOOD[:4], ("rain", "Thunder, then Rain Falling hard"), *GOOD[4:]]
    path = write_csv(tmp_path / "u.csv", rows)
    with pytest.raises(ProtocolError) as err:
        load_unseen_captions(path, ["dog", "rain"], TRAINING)
    # header is line 1, so the 5th data row is line 6
    assert f"{path}:6:" in str(err.value)
    assert "rain falling" in str(err.value)


@pytest.mark.parametrize("header", [("label", "text"), ("caption", "label"), ("label", "caption", "extra")])
def test_wrong_columns_raise(tmp_path, header):
    path = write_csv(tmp_path / "u.csv", [(*r, "x")[: len(header)] for r in GOOD], header=header)
    with pytest.raises(ProtocolError, match="columns"):
        load_unseen_captions(path, ["dog", "rain"], TRAINING)


def test_a_row_without_caption_names_its_line(tmp_path):
    path = write_csv(tmp_path / "u.csv", [*GOOD[:2], ("dog", "  "), *GOOD[2:]])
    with pytest.raises(ProtocolError, match=r"u\.csv:4:"):
        load_unseen_captions(path, ["dog", "rain"], TRAINING)


def test_shipped_unseen_captions_load_against_the_shipped_labels(shipped_serst):
    captions = read_labels(shipped_serst)
    table = load_unseen_captions(
        ROOT / "data/captions/unseen.csv", sorted(captions), {c.lower() for c in captions.values()}
    )
    assert set(captions) <= set(table)
    assert all(len(table[label]) >= 3 for label in captions)
    for label, options in table.items():
        assert len(set(options)) == len(options), label
        assert not any(c.lower() in o.lower() for o in options for c in captions.values()), label


def test_unseen_prompt_is_one_of_the_labels_captions_and_stable(serst, tmp_path):
    table = load_unseen_captions(write_csv(tmp_path / "u.csv", GOOD), ["dog", "rain"], TRAINING)
    items = [i for i in build_items(serst) if i.label in table]
    prompts = [unseen_prompt(i, table) for i in items]
    assert all(p in table[i.label] for p, i in zip(prompts, items, strict=True))
    assert prompts == [unseen_prompt(i, table) for i in build_items(serst) if i.label in table]
    # depends on the item id only, not on the order of the call
    assert [unseen_prompt(i, table) for i in reversed(items)] == prompts[::-1]


def test_unseen_prompt_uses_several_paraphrases_across_items():
    table = {"dog": ["one", "two", "three"]}
    base = build_item_stub()
    chosen = {unseen_prompt(_with_id(base, f"test_{n:04d}_dog"), table) for n in range(40)}
    assert chosen == {"one", "two", "three"}


def build_item_stub() -> EvalItem:
    from seap_model.eval.protocols import RefClip

    ref = RefClip(Path("r.wav"), "dog", "test_0000", frozenset({"audio/dog_A.flac"}), 0.0)
    return EvalItem("test_0000_dog", "dog", "a dog barking", Path("s.wav"), 0.0, ref.recordings, ref, None, None, None)


def _with_id(item: EvalItem, new_id: str) -> EvalItem:
    from dataclasses import replace

    return replace(item, id=new_id)


# ---------------------------------------------------------------- the seen-recordings control (split: train)


def test_train_split_items_take_every_reference_from_other_training_recordings(tmp_path):
    splits = standard_splits()
    splits["train"] = [
        scene("train_0", [event("dog", 0.0, 1.0, "dog_T1"), event("bell", 1.0, 2.0, "bell_T1")]),
        scene("train_1", [event("dog", 0.5, 1.5, "dog_T2")]),
        scene("train_2", [event("dog", 0.2, 1.2, "dog_T3"), event("bell", 0.0, 1.0, "bell_T2")]),
        scene("train_3", [event("bell", 2.0, 3.0, "bell_T3"), event("rain", 0.0, 4.0, "rain_T1")]),
        scene("train_4", [event("rain", 0.0, 4.0, "rain_T2")]),
    ]
    root = write_serst(tmp_path / "s", {k: CAPTIONS[k] for k in ("bell", "dog", "rain")}, splits)
    items = build_items(root, split="train")
    assert [i.id for i in items] == [
        "train_0_dog",
        "train_0_bell",
        "train_1_dog",
        "train_2_dog",
        "train_2_bell",
        "train_3_bell",
        "train_3_rain",
        "train_4_rain",
    ]
    train_ids = {s.id for s in read_manifest(root / "train.jsonl")}
    target = label_recordings(root, "train")
    for item in items:
        scene_id = item.id.removesuffix(f"_{item.label}")
        assert item.scene_audio == root / f"audio/train/{scene_id}.wav"
        for clip in (item.paper, item.transfer, item.alternative, item.conflict):
            assert clip.scene in train_ids, (item.id, clip)  # nothing from the held-out splits
        assert not item.transfer.recordings & target[scene_id][item.label], item.id
        assert not item.alternative.recordings & item.transfer.recordings, item.id
    # the test split's items are unchanged by the option and still take val references
    assert build_items(root) == build_items(root, split="test")
    assert all(i.transfer.scene.startswith("val_") for i in build_items(root))


def test_reference_pools_name_the_split_and_reject_others(serst):
    test_pools, train_pools = reference_pools(serst, "test"), reference_pools(serst, "train")
    assert [{c.scene for refs in p.values() for c in refs} for p in test_pools] == [
        {"val_0", "val_1", "val_2", "val_3", "val_4"},
        {"test_0", "test_1", "test_2"},
    ]
    assert [{c.scene for refs in p.values() for c in refs} for p in train_pools] == [{"train_0"}]
    with pytest.raises(ProtocolError, match="evaluate.split"):
        reference_pools(serst, "val")
