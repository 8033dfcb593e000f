"""Manifest schema: round trip, malformed rows, labels file, captions of scenes and crops."""

import dataclasses
import json
import re

import pytest

from seap_model.data.manifest import (
    Event,
    ManifestError,
    Reference,
    Scene,
    caption_events,
    read_labels,
    read_manifest,
    window_caption,
    write_labels,
    write_manifest,
)

CAPTIONS = {"dog": "a dog barking", "bell": "a bell ringing", "car": "a car passing"}


def _scene(events, references=()) -> Scene:
    return Scene("train_0007", "train", "audio/train/train_0007.wav", 4.16, "", list(events), list(references))


def test_manifest_round_trip_and_path_resolution(tmp_path):
    scene = _scene(
        [Event("dog", 0.52, 1.31, "audio/dog_01.flac"), Event("bell", 1.0, 3.5, "audio/bell_01.flac")],
        [Reference("dog", "references/train/train_0007_dog_0.wav", [(0.52, 1.31), (2.0, 2.71)])],
    )
    other = dataclasses.replace(scene, id="train_0008")  # ids are unique in a manifest (a repeat is refused)
    path = tmp_path / "train.jsonl"
    write_manifest(path, [scene, other])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert list(rows[0]) == ["id", "split", "audio", "duration", "caption", "events", "references"]
    assert rows[0]["references"][0]["spans"] == [[0.52, 1.31], [2.0, 2.71]]
    back = read_manifest(path)
    assert back == [scene, other]
    assert back[0].path(back[0].audio) == tmp_path / "audio/train/train_0007.wav"
    assert back[0].path(back[0].references[0].audio) == tmp_path / "references/train/train_0007_dog_0.wav"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.pop("caption"), "caption"),
        (lambda r: r.update(split="dev"), "split"),
        (lambda r: r["events"][1].update(onset="soon"), "events[1].onset"),
        (lambda r: r["events"][0].update(offset=0.1), "events[0]"),
        (lambda r: r["references"][0].update(spans=[[0.5, 1.0, 2.0]]), "references[0].spans[0]"),
        (lambda r: r.update(root="/elsewhere"), "root"),
    ],
)
def test_malformed_row_names_file_line_and_field(tmp_path, change, field):
    scene = _scene(
        [Event("dog", 0.5, 1.0, "a.flac"), Event("dog", 2.0, 3.0, "a.flac")],
        [Reference("dog", "r.wav", [(0.5, 1.0)])],
    )
    path = tmp_path / "val.jsonl"
    write_manifest(path, [scene, scene])
    lines = path.read_text().splitlines()
    row = json.loads(lines[1])
    change(row)
    path.write_text(lines[0] + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ManifestError, match=rf"val\.jsonl:2: field '{re.escape(field)}'"):
        read_manifest(path)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("\n{not json\n")
    with pytest.raises(ManifestError, match=r"test\.jsonl:2:"):
        read_manifest(path)


def test_labels_round_trip_and_errors(tmp_path):
    write_labels(tmp_path, CAPTIONS)
    data = json.loads((tmp_path / "labels.json").read_text())
    assert data["labels"] == ["bell", "car", "dog"]
    assert read_labels(tmp_path) == {"bell": "a bell ringing", "car": "a car passing", "dog": "a dog barking"}
    (tmp_path / "labels.json").write_text(json.dumps({"labels": ["dog"], "captions": {}}))
    with pytest.raises(ManifestError, match="labels.json.*no caption for \\['dog'\\]"):
        read_labels(tmp_path)
    with pytest.raises(ManifestError, match="not found"):
        read_labels(tmp_path / "missing")


def test_caption_rules():
    dog, bell, car = (Event("dog", 0.0, 1.0, ""), Event("bell", 0.5, 2.0, ""), Event("car", 3.0, 4.0, ""))
    assert caption_events([dog], CAPTIONS) == ("a dog barking", ["dog"])
    assert caption_events([bell, dog], CAPTIONS) == ("a dog barking and a bell ringing", ["dog", "bell"])
    assert caption_events([car, dog], CAPTIONS) == ("a dog barking, then a car passing", ["dog", "car"])
    assert caption_events([dog, bell, car], CAPTIONS)[0] == "a dog barking and a bell ringing, then a car passing"
    # touching occurrences are sequential; interleaved (non-overlapping) ones are not
    assert caption_events([dog, Event("car", 1.0, 2.0, "")], CAPTIONS)[0] == "a dog barking, then a car passing"
    interleaved = [dog, Event("car", 1.5, 2.0, ""), Event("dog", 2.5, 3.0, "")]
    assert caption_events(interleaved, CAPTIONS)[0] == "a dog barking and a car passing"
    assert caption_events([], CAPTIONS) == ("", [])
    with pytest.raises(KeyError, match="cat"):
        caption_events([Event("cat", 0.0, 1.0, "")], CAPTIONS)


def test_window_caption():
    scene = _scene(
        [
            Event("dog", 0.0, 1.0, ""),
            Event("bell", 0.9, 1.2, ""),
            Event("dog", 2.5, 3.0, ""),
            Event("car", 3.0, 4.16, ""),
        ]
    )
    # the dog overlaps [0.8, 2.88) by only 0.2 s (< 0.25); the short bell (0.3 s) by 0.3 s; the second dog fully
    assert window_caption(scene, 0.8, 2.88, CAPTIONS) == (
        "a bell ringing, then a dog barking",
        ["bell", "dog"],
    )
    # a 0.1 s occurrence counts when it lies entirely inside the crop
    short = _scene([Event("bell", 1.0, 1.1, ""), Event("car", 0.0, 4.16, "")])
    assert window_caption(short, 0.0, 2.08, CAPTIONS) == ("a car passing and a bell ringing", ["car", "bell"])
    assert window_caption(short, 1.05, 3.13, CAPTIONS) == ("a car passing", ["car"])
    assert window_caption(scene, 1.3, 2.4, CAPTIONS) == ("", [])
    assert window_caption(scene, 0.0, 4.16, CAPTIONS)[1] == ["dog", "bell", "car"]
