"""Collection readers (JSONL, CSV, AudioSet strong + WavCaps JSON) and the data.source params."""

import json

import pytest

from seap_model.config import ParamsError, parse_params
from seap_model.data.collection import manifest_files, read_collection
from seap_model.data.corpus import CorpusError
from seap_model.data.fields import label_id


def _source(**kwargs):
    return parse_params({"data": {"source": kwargs}}).data.source


def test_source_defaults_to_shipped_and_validates():
    assert parse_params({}).data.source.type == "shipped"
    s3 = _source(type="s3", bucket="my-bucket", prefix="serst/", endpoint_url="http://127.0.0.1:9000", manifest="m.csv")
    assert (s3.clip_seconds, s3.workers, s3.anonymous) == (10.0, 8, False)
    with pytest.raises(ParamsError, match=r"data\.source\.http\.base_url: .*http:// or https://"):
        _source(type="http", base_url="ftp://host/x", manifest="m.jsonl")
    with pytest.raises(ParamsError, match=r"data\.source\.local\.manifest: Field required"):
        _source(type="local", root="x")
    with pytest.raises(ParamsError, match=r"does not match any of the expected tags"):
        _source(type="ftp")
    with pytest.raises(ParamsError, match=r"data\.source\.local\.clip_seconds"):
        _source(type="local", root="x", manifest="m.csv", clip_seconds=0)
    with pytest.raises(ParamsError, match=r"unknown key"):
        _source(type="local", root="x", manifest="m.csv", bukcet="y")


def test_label_ids():
    assert label_id("Dog bark") == "dog_bark"
    assert label_id("Male speech, man speaking") == "male_speech_man_speaking"
    assert label_id("  CAR__horn ") == "car_horn"
    assert label_id("2nd bell") == "l_2nd_bell"


def test_jsonl_reader(tmp_path):
    rows = [
        {
            "clip": "a.wav",
            "caption": "a dog",
            "events": [{"label": "Dog", "onset": 0.5, "offset": 1.0}],
            "group": "g1",
            "sha256": "AB" * 32,
            "size": 10,
        },
        {
            "clip": "b.wav",
            "events": [{"label": "dog", "onset": 2, "offset": 1}, {"label": "bell", "onset": 0, "offset": 1}],
        },
        {"clip": "a.wav", "events": []},  # duplicate clip
        {"clip": "../up.wav", "events": []},
        {
            "clip": "c.wav",
            "events": [{"label": "dog", "onset": 0, "offset": 1}, {"label": "dog", "onset": 0, "offset": 1}],
        },
        {"clip": "d.wav", "events": [{"label": "dog", "onset": "x", "offset": 1}]},  # no usable event left
        {"clip": "e.wav", "events": [{"label": "dog", "onset": 0, "offset": 1}], "colour": "red"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows) + "not json\n\n"
    (tmp_path / "m.jsonl").write_bytes(text.encode() + b'{"clip": "f.wav", "caption": "caf\xe9", "events": []}\n')
    got = read_collection(_source(type="local", root=str(tmp_path), manifest="m.jsonl"), tmp_path)
    assert [c.key for c in got.clips] == ["a.wav", "b.wav", "c.wav"]
    a = got.clips[0]
    assert (a.caption, a.group, a.sha256, a.size) == ("a dog", "g1", "ab" * 32, 10)
    assert [(e.label, e.onset, e.offset, e.item) for e in a.events] == [("dog", 0.5, 1.0, "m.jsonl:1 events[0]")]
    assert got.clips[1].group == "b.wav"  # default group: the clip itself
    rejects = {r.item: (r.rule, r.reason, r.clips, r.events) for r in got.rejects}
    assert rejects["m.jsonl:2 events[0]"][:2] == ("bad_span", "onset 2.0 s is after offset 1.0 s")
    assert rejects["m.jsonl:3"] == ("bad_row", "field 'clip': 'a.wav' is already listed at m.jsonl:1", 1, 0)
    assert rejects["m.jsonl:4"][1].startswith("field 'clip': '../up.wav' is not a relative path")
    assert rejects["m.jsonl:5 events[1]"][:2] == ("duplicate", "duplicate of m.jsonl:5 events[0]")
    assert rejects["m.jsonl:6 events[0]"][0] == "bad_span"
    assert rejects["d.wav"] == ("no_events", "no usable strong labels (defined at m.jsonl:6)", 1, 0)
    assert rejects["m.jsonl:7"][:2] == ("bad_row", "unknown field(s) ['colour']")
    assert rejects["m.jsonl:8"][:2] == ("bad_row", "not JSON (Expecting value)")
    assert rejects["m.jsonl:10"][:2] == ("not_utf8", "field 'caption': not valid UTF-8 (byte 0xe9 at character 3)")
    assert got.captions == {"bell": "bell", "dog": "dog"}
    # every event entry read is kept or rejected (alone, or with its clip)
    kept = sum(len(c.events) for c in got.clips)
    assert got.events_read == 7 and kept + sum(r.events for r in got.rejects) == 7
    assert len(got.clips) + sum(r.clips for r in got.rejects) == 9  # every non-empty line is one clip entry


def test_csv_reader_with_labels_file(tmp_path):
    (tmp_path / "labels.csv").write_text("label,caption\ndog,a dog barking\nCar horn,a car horn honking\n")
    lines = [
        "clip,caption,label,onset,offset,group",
        "x/a.flac,street,dog,0.1,0.9,rec1",
        "x/b.flac,,car horn,1,3,rec1",
        "x/a.flac,,Car Horn,2,4,",
        "x/a.flac,another caption,dog,3,3.5,",
        "x/a.flac,,dog,0.1,0.9,",
        "x/b.flac,,cat,0,1,",
        "x/b.flac,,dog,1,nan,",
        "x/c.flac,,dog,0,1,,extra",
    ]
    (tmp_path / "m.csv").write_bytes(("\n".join(lines) + "\n").encode() + b"x/d.flac,m\xfcde,dog,0,1,\n")
    source = _source(type="http", base_url="http://h/", manifest="m.csv", labels="labels.csv")
    assert manifest_files(source) == ["m.csv", "labels.csv"]
    got = read_collection(source, tmp_path)
    assert [(c.key, c.caption, c.group) for c in got.clips] == [
        ("x/a.flac", "street", "rec1"),
        ("x/b.flac", "", "rec1"),
    ]
    assert [(e.label, e.onset, e.offset) for e in got.clips[0].events] == [("dog", 0.1, 0.9), ("car_horn", 2.0, 4.0)]
    rules = {r.item: (r.rule, r.reason) for r in got.rejects}
    assert rules["m.csv:5"] == ("bad_row", "field 'caption': 'another caption' differs from 'street' given at m.csv:2")
    assert rules["m.csv:6"] == ("duplicate", "duplicate of m.csv:2")
    assert rules["m.csv:7"] == ("unknown_label", "field 'label': unknown label 'cat' (not in the labels file)")
    assert rules["m.csv:8"][0] == "bad_span"
    assert rules["m.csv:9"] == ("bad_row", "too many fields (7)")
    assert rules["m.csv:10"][0] == "not_utf8"
    assert got.captions == {"car_horn": "a car horn honking", "dog": "a dog barking"}
    assert got.events_read == 9 and sum(len(c.events) for c in got.clips) + sum(r.events for r in got.rejects) == 9
    (tmp_path / "bad.csv").write_text("clip,label,onset\n")
    with pytest.raises(CorpusError, match=r"bad\.csv: missing column\(s\) \['offset'\]"):
        read_collection(_source(type="local", root=".", manifest="bad.csv"), tmp_path)


def test_audioset_strong_reader(tmp_path):
    (tmp_path / "json_files/AudioSet_SL").mkdir(parents=True)
    wavcaps = {
        "num_captions_per_audio": 1,
        "data": [
            {"id": "Yb0RFKhbpFJA.wav", "caption": "Wind and a man speaking.", "audio": "wav_path", "duration": 10.0},
            {"id": "YxlGt805lTAZ.wav", "caption": "A dog barks.", "duration": 10.0},
            {"id": "Yb0RFKhbpFJA.wav", "caption": "again"},
            {"id": "Ynolabels000.wav", "caption": "silence"},
            {"caption": "no id"},
        ],
    }
    (tmp_path / "json_files/AudioSet_SL/as_final.json").write_text(json.dumps(wavcaps))
    (tmp_path / "mid_to_display_name.tsv").write_text(
        "/m/03m9d0z\tWind\n/m/05zppz\tMale speech, man speaking\n/m/0bt9lr\tDog\n"
    )
    (tmp_path / "audioset_train_strong.tsv").write_text(
        "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n"
        "b0RFKhbpFJA_30000\t0.000\t10.000\t/m/03m9d0z\n"
        "b0RFKhbpFJA_30000\t1.200\t2.300\t/m/05zppz\n"
        "b0RFKhbpFJA_30000\t1.200\t2.300\t/m/05zppz\n"
        "xlGt805lTAZ_0\t2.627\t7.237\t/m/0bt9lr\n"
        "xlGt805lTAZ_0\t3.0\t4.0\t/m/xxxx\n"
        "zzzzzzzzzzz_10000\t0\t1\t/m/0bt9lr\n"
    )
    (tmp_path / "audioset_eval_strong.tsv").write_text(
        "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\nxlGt805lTAZ_0\t8\t5\t/m/0bt9lr\n"
    )
    source = _source(type="audioset_strong", location=str(tmp_path))
    got = read_collection(source, tmp_path)
    assert [(c.key, c.caption, c.group) for c in got.clips] == [
        ("AudioSet_SL/Yb0RFKhbpFJA.flac", "Wind and a man speaking.", "b0RFKhbpFJA"),
        ("AudioSet_SL/YxlGt805lTAZ.flac", "A dog barks.", "xlGt805lTAZ"),
    ]
    assert [(e.label, e.onset, e.offset) for e in got.clips[0].events] == [
        ("wind", 0.0, 10.0),
        ("male_speech_man_speaking", 1.2, 2.3),
    ]
    rules = {r.item: r.rule for r in got.rejects}
    assert rules == {
        "as_final.json:data[2]": "duplicate",
        "as_final.json:data[4]": "bad_row",
        "audioset_train_strong.tsv:4": "duplicate",
        "audioset_train_strong.tsv:6": "unknown_label",
        "audioset_train_strong.tsv:7": "no_clip",
        "audioset_eval_strong.tsv:2": "bad_span",
        "AudioSet_SL/Ynolabels000.flac": "no_events",
    }
    assert got.captions == {"dog": "dog", "male_speech_man_speaking": "male speech, man speaking", "wind": "wind"}
    assert got.events_read == 7 and sum(len(c.events) for c in got.clips) + sum(r.events for r in got.rejects) == 7
