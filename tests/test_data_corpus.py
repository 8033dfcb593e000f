"""metadata.csv parsing: good rows become clips, malformed rows become rejects naming the line."""

import pytest

from seap_model.data.corpus import CorpusError, read_corpus

HEADER = "file,label,caption,source_caption,package,source_path,license,duration\n"


def test_malformed_rows_are_rejected_with_their_line(tmp_path):
    (tmp_path / "audio").mkdir()
    for name in ["dog_01", "dog_02", "bell_01", "x_01", "x_02", "x_03", "x_04", "x_05", "x_06"]:
        (tmp_path / "audio" / f"{name}.flac").write_bytes(b"")
    rows = [
        "audio/dog_01.flac,dog,a dog barking,Woof,pkg,src,CC0,1.5",  # line 2: fine
        "audio/bell_01.flac,bell,a bell ringing,Ding,pkg,src,CC0,2",  # line 3: fine
        "audio/x_01.flac,dog,a dog barking,Woof,pkg,src,CC0",  # 4: missing duration
        "audio/x_02.flac,,a dog barking,Woof,pkg,src,CC0,1.0",  # 5: empty label
        "audio/x_03.flac,Dog!,a dog barking,Woof,pkg,src,CC0,1.0",  # 6: malformed label
        "audio/x_04.flac,dog,a dog barking,Woof,pkg,src,CC0,long",  # 7: non-numeric duration
        "audio/missing.flac,dog,a dog barking,Woof,pkg,src,CC0,1.0",  # 8: file not found
        "audio/x_05.flac,dog,a puppy yapping,Woof,pkg,src,CC0,1.0",  # 9: caption disagrees with line 2
        "audio/dog_01.flac,dog,a dog barking,Woof,pkg,src,CC0,1.5",  # 10: duplicate of line 2
        "../etc/passwd,dog,a dog barking,Woof,pkg,src,CC0,1.5",  # 11: outside the corpus
        "audio/x_06.flac,dog,a dog barking,Woof,pkg,src,CC0,1.0,extra",  # 12: too many fields
        "audio/dog_02.flac,dog,a dog barking,Woof,pkg,src,CC0,-1",  # 13: negative duration
    ]
    (tmp_path / "metadata.csv").write_text(HEADER + "\n".join(rows) + "\n")
    clips, rejects = read_corpus(tmp_path)
    assert [(c.file, c.label, c.caption, c.duration) for c in clips] == [
        ("audio/dog_01.flac", "dog", "a dog barking", 1.5),
        ("audio/bell_01.flac", "bell", "a bell ringing", 2.0),
    ]
    assert clips[0].path == tmp_path / "audio" / "dog_01.flac"
    reasons = {r.item: r.reason for r in rejects}
    assert len(clips) + len(rejects) == len(rows)
    assert "missing field 'duration'" in reasons["metadata.csv:4"]
    assert "field 'label' is empty" in reasons["metadata.csv:5"]
    assert "not a lower-case identifier" in reasons["metadata.csv:6"]
    assert "'long' is not a number" in reasons["metadata.csv:7"]
    assert "not found" in reasons["metadata.csv:8"]
    assert "differs from 'a dog barking'" in reasons["metadata.csv:9"] and "line 2" in reasons["metadata.csv:9"]
    assert "already listed on line 2" in reasons["metadata.csv:10"]
    assert "not a path inside the corpus" in reasons["metadata.csv:11"]
    assert "too many fields" in reasons["metadata.csv:12"]
    assert "not a positive number" in reasons["metadata.csv:13"]


def test_missing_column_or_file_is_a_corpus_error(tmp_path):
    with pytest.raises(CorpusError, match="metadata file not found"):
        read_corpus(tmp_path)
    (tmp_path / "metadata.csv").write_text("file,label,duration\naudio/a.flac,dog,1.0\n")
    with pytest.raises(CorpusError, match=r"missing column\(s\) \['caption'\]"):
        read_corpus(tmp_path)


def test_the_group_column_is_read_and_an_empty_group_is_the_clip_itself(tmp_path):
    (tmp_path / "audio").mkdir()
    for name in ("p_c4", "p_c5", "door"):
        (tmp_path / "audio" / f"{name}.flac").write_bytes(b"")
    (tmp_path / "metadata.csv").write_text(
        "file,label,caption,duration,group\n"
        "audio/p_c4.flac,piano,a piano playing,1.0,sf2:p000\n"
        "audio/p_c5.flac,piano,a piano playing,1.0,sf2:p000\n"
        "audio/door.flac,door,a door,1.0,\n"
    )
    clips, rejects = read_corpus(tmp_path)
    assert not rejects
    assert [c.group for c in clips] == ["sf2:p000", "sf2:p000", "audio/door.flac"]


def test_the_shipped_corpora_read_without_rejects():
    """Both shipped corpora: v2 (the default, with groups) and v1 (the tests' fixtures)."""
    v2, rejects = read_corpus("data/sound_events_v2")
    assert not rejects and len(v2) == 1544
    assert len({c.group for c in v2}) == 964 and len({c.label for c in v2}) == 30
    v1, rejects = read_corpus("data/sound_events")
    assert not rejects and len(v1) == 213 and all(c.group == c.file for c in v1)
