"""Fuzzing (issue 28, item 3): generated malformed rows and audio files, mixed with good ones, through every
reader a user hands them to. Nothing crashes (the only exception allowed is the domain error for a file that is
unreadable as a whole), each bad item is rejected with a reason naming its file and line (and the field at
fault), and every good item is kept exactly once. Generators: tests/faults/fuzzers.py; seed: tests/faults/ledger.py.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import soundfile as sf
import torch

from seap_model.audio import AudioError
from seap_model.batch.items import Item, generate_items, prompt_file_items
from seap_model.batch.jobs import read_job
from seap_model.batch.storage import LocalFiles, MissingObject
from seap_model.config import LocalSource, ReferenceParams, SamplingParams
from seap_model.data.collection import CSV_COLUMNS, StrongClip, StrongEvent, read_collection
from seap_model.data.corpus import read_corpus
from seap_model.data.manifest import ManifestError, read_manifest
from seap_model.data.strong_segment import ClipTask, segment_clip
from seap_model.generation import load_reference
from tests.conftest import make_tiny_pipeline
from tests.faults import fuzzers as fz
from tests.faults.ledger import record, rng, size

ROWS = size(1000, 10_000)
FILES = size(200, 1000)


def _assert_rows(lines: list[fz.Line], kept: list[str], rejected: dict[int, list[str]], where: str, first: int = 1):
    """Every bad line (the file's line ``first`` is ``lines[0]``) has a reason naming ``where:line`` and its field;
    every good key is kept exactly once and nothing else is. ``rejected``: line -> the reasons given for it."""
    good = [line.key for line in lines if not line.bad]
    assert len(set(kept)) == len(kept), "a row kept twice"
    assert not set(good) - set(kept), f"good rows lost: {sorted(set(good) - set(kept))[:5]}"
    extra = set(kept) - set(good)
    assert not extra, f"bad rows kept: {[(n, ln.kind) for n, ln in enumerate(lines, first) if _id(ln) in extra][:8]}"
    for n, line in enumerate(lines, first):
        reasons = rejected.pop(n, [])
        if not line.bad:
            assert not reasons, (n, line.kind, reasons)
            continue
        assert reasons, f"line {n} ({line.kind}) was not rejected"
        assert all(f"{where}:{n}" in r for r in reasons), (n, line.kind, reasons)
        if line.field:
            name = line.field.rsplit(".", 1)[-1]  # events.0.onset: the onset of events[0]
            assert any(name in r.split(f"{where}:{n}", 1)[1] for r in reasons), (n, line.kind, reasons)
    assert not rejected, f"rejects for lines that are not in the file: {sorted(rejected)[:5]}"
    bad = sum(line.bad for line in lines)
    return {"trials": len(lines), "rejected": bad, "kept": len(good), "lost": 0, "duplicated": 0}


def _id(line: fz.Line) -> str | None:
    """The id a bad line's row would be kept under (its id, clip or file field), if it has one."""
    text = line.data.decode("utf-8", "replace")
    for name in ("id", "clip", "file"):
        match = re.search(rf'"{name}": "(.*?)"', text) or re.match(r"([^,]*)," if name != "id" else "$^", text)
        if match:
            return match.group(1)
    return None


def _by_line(pairs) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for line, reason in pairs:
        out.setdefault(line, []).append(reason)
    return out


def _text(r: random.Random) -> str:
    return r.choice(fz.PROMPTS)


# --- batch job rows -------------------------------------------------------------------------------------------------


def _job_row(r: random.Random, key: str) -> dict:
    row = {"id": key, "prompt": _text(r), "reference": f"refs/{r.choice(['a', 'b', 'c'])}.wav"}
    for name, value in (("steps", r.randint(1, 1000)), ("guidance", r.uniform(0, 50)), ("seed", r.randrange(2**31))):
        if r.random() < 0.4:
            row[name] = value
    return row


JOB = fz.Schema(
    fields={
        "id": ("id", True),
        "prompt": ("text", True),
        "reference": ("path", True),
        "steps": ("count", False),
        "guidance": ("number", False),
        "seed": ("count", False),
        "duration": ("number", False),
    },
    good=_job_row,
    key_field="id",
    accepts=frozenset({("seed", "zero")}),
)


def test_batch_job_rows(tmp_path):
    lines = fz.json_lines(rng("fuzz:job rows"), ROWS, JOB)
    path = fz.write_lines(tmp_path / "job.jsonl", lines)
    job = read_job(str(path))
    rejected = _by_line((e["line"], e["reason"]) for e in job.errors)
    figures = _assert_rows(lines, [item.row.id for item in job.items], rejected, str(path))
    record("fuzz", "batch job rows", **figures)


# --- generate-stage prompt files ------------------------------------------------------------------------------------

PROMPT_FILE = fz.Schema(
    fields={"id": ("id", True), "prompt": ("text", True), "reference": ("path", True)},
    good=lambda r, key: {"id": key, "prompt": _text(r), "reference": f"refs/{r.choice(['a', 'b'])}.wav"},
    key_field="id",
    # An id that is a number is converted (documented: tests/test_generation.py keeps id 7 as "7").
    accepts=frozenset({("id", "number"), ("id", "float"), ("id", "bool")}),
    unknown_field=False,
)


def test_prompt_file_rows(tmp_path):
    lines = fz.json_lines(rng("fuzz:prompt rows"), ROWS, PROMPT_FILE)
    path = fz.write_lines(tmp_path / "prompts.jsonl", lines)
    items, failures = prompt_file_items(path)
    rejected = _by_line((int(f["item"].rsplit(":", 1)[1]), f"{f['item']}: {f['reason']}") for f in failures)
    figures = _assert_rows(lines, [it.id for it in items], rejected, str(path))
    record("fuzz", "generate prompt file rows", **figures)


# --- collection manifests (download, segment) ----------------------------------------------------------------------

LABELS = ("dog", "bell", "rain")


def _clip_row(r: random.Random, key: str) -> dict:
    events = []
    for _ in range(r.randint(1, 3)):
        onset = round(r.uniform(0, 8), 3)
        events.append({"label": r.choice(LABELS), "onset": onset, "offset": round(onset + r.uniform(0.1, 2), 3)})
    row = {"clip": key, "caption": _text(r), "events": events}
    if r.random() < 0.3:
        row["group"] = f"rec-{r.randrange(10)}"
    if r.random() < 0.3:
        row["size"] = r.randrange(10**6)
    return row


COLLECTION = fz.Schema(
    fields={
        "clip": ("path", True),
        "caption": ("text", False),
        "group": ("text", False),
        "size": ("count", False),
        "events": ("events", True),
        "events.0.label": ("text", True),
        "events.0.onset": ("number", True),
        "events.0.offset": ("number", True),
    },
    good=_clip_row,
    key_field="clip",
    accepts=frozenset(
        {
            ("caption", "blank"),  # an empty caption is composed from the label captions
            ("group", "blank"),
            ("size", "zero"),
            ("size", "huge"),
            ("size", "bigint"),
            ("events.0.offset", "huge"),  # a span past the audio's end is clipped or rejected by segment
        }
    ),
)


def test_collection_jsonl_rows(tmp_path):
    lines = fz.json_lines(rng("fuzz:collection jsonl"), ROWS, COLLECTION)
    fz.write_lines(tmp_path / "clips.jsonl", lines)
    collection = read_collection(LocalSource(type="local", root=str(tmp_path), manifest="clips.jsonl"), tmp_path)
    pairs, by_key = [], {}
    for reject in collection.rejects:
        if reject.item.startswith("clips.jsonl:"):
            pairs.append((int(reject.item.split(":")[1].split()[0]), f"{reject.item}: {reject.reason}"))
        else:  # a clip all of whose events were rejected: named by its key, the reason names its line
            by_key[reject.item] = reject.reason
    kept = [c.key for c in collection.clips]
    figures = _assert_rows(lines, kept, _by_line(pairs), "clips.jsonl")
    assert all(reason.startswith("no usable strong labels (defined at clips.jsonl:") for reason in by_key.values())
    record("fuzz", "collection JSONL rows", **figures)


def _csv_lines(r: random.Random, n: int, columns: tuple[str, ...], good, bad_fields: dict[str, str], duplicate=None):
    """CSV data lines (after the header): good rows, rows with one bad field, bad rows, duplicates (whose reason
    names the field ``duplicate``)."""
    lines: list[fz.Line] = []
    rows: list[dict] = []
    for i in range(n):
        row = good(r, i)
        if r.random() >= 0.6:
            lines.append(fz.Line(fz.csv_line(row, columns), key=row[columns[0]]))
            rows.append(row)
            continue
        what = r.random()
        if what < 0.15:
            kind, data = r.choice(fz.CSV_BAD_ROWS)
            lines.append(fz.Line(data, kind=f"row:{kind}"))
        elif what < 0.25 and rows:
            lines.append(fz.Line(fz.csv_line(r.choice(rows), columns), field=duplicate, kind="duplicate"))
        else:
            field = r.choice(sorted(bad_fields))
            damage, value = r.choice(fz.CSV_BAD_VALUES[bad_fields[field]])
            row[field] = value
            lines.append(fz.Line(fz.csv_line(row, columns), field=field, kind=f"{field}:{damage}"))
    return lines


def _event_row(r: random.Random, i: int) -> dict:
    onset = round(r.uniform(0, 8), 3)
    return {
        "clip": f"audio/{i}.flac",
        "caption": _text(r).replace("\n", " "),
        "label": r.choice(LABELS),
        "onset": str(onset),
        "offset": str(round(onset + r.uniform(0.1, 2), 3)),
    }


def test_collection_csv_rows(tmp_path):
    bad_fields = {"clip": "path", "label": "label", "onset": "seconds", "offset": "seconds", "caption": "caption"}
    lines = _csv_lines(rng("fuzz:collection csv"), ROWS, CSV_COLUMNS, _event_row, bad_fields)
    _write_csv(tmp_path / "clips.csv", CSV_COLUMNS, lines)
    collection = read_collection(LocalSource(type="local", root=str(tmp_path), manifest="clips.csv"), tmp_path)
    pairs = [(int(x.item.split(":")[1]), f"{x.item}: {x.reason}") for x in collection.rejects if ".csv:" in x.item]
    kept = [c.key for c in collection.clips]
    figures = _assert_rows(lines, kept, _by_line(pairs), "clips.csv", first=2)
    record("fuzz", "collection CSV rows", **figures)


def _write_csv(path: Path, columns: tuple[str, ...], lines: list[fz.Line]) -> None:
    path.write_bytes(b"".join(x + b"\n" for x in [",".join(columns).encode(), *(line.data for line in lines)]))


# --- corpus metadata.csv (compose) ----------------------------------------------------------------------------------

CAPTIONS = {"dog": "a dog barking", "bell": "a bell ringing", "rain": "rain falling"}


def _corpus_row(r: random.Random, i: int) -> dict:
    label = r.choice(LABELS)
    return {"file": f"clips/{i}.wav", "label": label, "caption": CAPTIONS[label], "duration": str(r.uniform(0.5, 9))}


def test_corpus_metadata_rows(tmp_path):
    columns = ("file", "label", "caption", "duration", "group")
    bad_fields = {"file": "path", "label": "label", "duration": "seconds", "caption": "text"}
    r = rng("fuzz:corpus metadata")
    lines = _csv_lines(r, ROWS, columns, _corpus_row, bad_fields, duplicate="file")
    (tmp_path / "clips").mkdir()
    for i in range(ROWS):  # every row's file exists, but for the rows whose file is damaged
        (tmp_path / "clips" / f"{i}.wav").write_bytes(b"")
    _write_csv(tmp_path / "metadata.csv", columns, lines)
    clips, rejects = read_corpus(tmp_path)
    pairs = [(int(x.item.split(":")[1]), f"{x.item}: {x.reason}") for x in rejects]
    figures = _assert_rows(lines, [c.file for c in clips], _by_line(pairs), "metadata.csv", first=2)
    record("fuzz", "corpus metadata rows", **figures)


# --- audio files ----------------------------------------------------------------------------------------------------

SR = 16000


def _audio_files(folder: Path, family: str, n: int) -> list[tuple[Path, str]]:
    """``n`` files: every kind once, then kinds drawn at random; named ``<n>-<kind>.wav`` (``.flac`` for FLAC)."""
    r = rng(family)
    kinds = list(fz.AUDIO_KINDS)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        kind = kinds[i] if i < len(kinds) else r.choice(kinds)
        path = folder / f"{i:04d}-{kind}.{'flac' if kind.startswith(('good_flac', 'flac')) else 'wav'}"
        path.write_bytes(fz.audio_file(r, kind))
        files.append((path, kind))
    return files


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory) -> list[tuple[Path, str]]:
    return _audio_files(tmp_path_factory.mktemp("fuzz") / "audio", "fuzz:audio files", FILES)


def test_audio_files_as_references(audio_files):
    files = audio_files
    rejected = kept = 0
    for path, kind in files:
        expected = fz.AUDIO_KINDS[kind]
        try:
            wave = load_reference(path, SR)
        except AudioError as exc:
            assert expected is not False, (path.name, str(exc))
            assert str(exc).startswith(f"reference {path}"), str(exc)
            assert "\n" not in str(exc)
            rejected += 1
            continue
        assert expected is not True, f"{path.name} was accepted"
        assert wave.ndim == 1 and wave.numel() >= SR // 2 and torch.isfinite(wave).all()
        kept += 1
    assert kept >= sum(fz.AUDIO_KINDS[k] is False for _, k in files)  # every good file (and some undecided ones)
    record("fuzz", "reference audio files", trials=len(files), rejected=rejected, kept=kept, lost=0, duplicated=0)


def test_audio_files_through_the_batch_engine(tmp_path, tiny_text, audio_files):
    files = audio_files[: size(len(fz.AUDIO_KINDS) + 2, FILES)]  # CI: every kind once, and two more
    items = [Item(f"item-{i}", "a dog barking", path) for i, (path, _) in enumerate(files)]
    sampling = SamplingParams(steps=1, duration=0.5, vocoder_iterations=1)
    pipe = make_tiny_pipeline(tiny_text)
    done, failures, _ = generate_items(pipe, items, tmp_path / "out", sampling, {}, batch_size=16)
    reasons = {f["item"]: f["reason"] for f in failures}
    kept = {row["id"] for row in done}
    assert len(done) == len(kept) and not kept & set(reasons), "an item done twice, or done and failed"
    for item, (path, kind) in zip(items, files):
        if item.id in reasons:
            assert fz.AUDIO_KINDS[kind] is not False, (path.name, reasons[item.id])
            assert f"reference {path}" in reasons[item.id], reasons[item.id]
        else:
            assert item.id in kept and fz.AUDIO_KINDS[kind] is not True, path.name
            assert sf.info(tmp_path / "out" / next(r["audio"] for r in done if r["id"] == item.id)).frames > 0
    figures = {"trials": len(files), "rejected": len(reasons), "kept": len(kept), "lost": 0, "duplicated": 0}
    record("fuzz", "batch engine references", **figures)


def _segment(path: Path, key: str, out: Path, clip_seconds: float = 2.0):
    item = f"clips.csv:{key}"
    clip = StrongClip(key, "", key, item, [StrongEvent("dog", 0.0, 0.4, item)])
    refs = ReferenceParams(seconds=0.3)
    task = ClipTask(clip, Path(key).stem, "train", path.parent, out, SR, clip_seconds, refs, CAPTIONS)
    return segment_clip(task)


# Segmentation keeps what it can cut a scene from: a short clip is zero-padded (a 0.1 s clip still holds the
# event's start), a silent one is rejected as silent_clip (tests/test_data_bad_files.py).
SEGMENT_KEEPS = {"too_short": True, "silent": False}


def test_audio_files_through_segmentation(tmp_path, audio_files):
    files = audio_files
    rejected = kept = 0
    for path, kind in files:
        outcome = _segment(path, path.name, tmp_path / "serst")
        expected_bad = fz.AUDIO_KINDS[kind] if kind not in SEGMENT_KEEPS else not SEGMENT_KEEPS[kind]
        if outcome.scene is None:
            assert expected_bad is not False, (path.name, outcome.rejects)
            assert [r.item for r in outcome.rejects] == [path.name] and outcome.rejects[0].rule, outcome.rejects
            rejected += 1
        else:
            assert expected_bad is not True, f"{path.name} was kept"
            assert sf.info(tmp_path / "serst" / outcome.scene.audio).frames == 2 * SR
            kept += 1
    record("fuzz", "segmentation audio files", trials=len(files), rejected=rejected, kept=kept, lost=0, duplicated=0)


def _hour_long_wav(path: Path, sr: int = 48000, channels: int = 2, loud_seconds: float = 5.0) -> Path:
    """A one-hour 16-bit WAV (691 MB by its header) whose first seconds are noise and the rest a sparse hole of
    zeros, so it takes almost no disk and no time to write."""
    import struct

    path.parent.mkdir(parents=True, exist_ok=True)
    block = 2 * channels
    data_bytes = 3600 * sr * block
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, sr, sr * block, block, 16)
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + fmt
    noise = fz.noise(rng("fuzz:hour"), loud_seconds, sr, channels)
    pcm = (noise * 32767).astype("<i2").tobytes()
    with path.open("wb") as f:
        f.write(header + b"data" + struct.pack("<I", data_bytes) + pcm)
        f.truncate(44 + data_bytes)
    return path


def test_an_hour_long_file_is_refused_as_reference_and_cut_by_segmentation_without_decoding_it(tmp_path):
    import tracemalloc

    path = _hour_long_wav(tmp_path / "raw" / "hour.wav")
    assert sf.info(path).duration == 3600
    tracemalloc.start()
    with pytest.raises(AudioError, match=rf"^reference {path}: audio is 3600.0 s long, at most 60 s is accepted$"):
        load_reference(path, SR)
    outcome = _segment(path, "hour.wav", tmp_path / "serst")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert outcome.scene is not None and outcome.seconds == 3600
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB: the hour was decoded"  # whole: 1.3 GiB of floats
    figures = {"trials": 2, "rejected": 1, "kept": 1, "lost": 0, "duplicated": 0, "peak_mib": round(peak / 2**20, 1)}
    record("fuzz", "1-hour audio file", **figures)


# --- what the fuzzing found (seed 0), each kept as a named case: the row, and the reason it now gets ------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
DIGITS = b"9" * 5000
ROW = b'"id": "a", "prompt": "a dog", "reference": "r.wav"'
CLIP = b'"clip": "a.wav", "events": [{"label": "dog", "onset": 0, "offset": 1}]'
FOUND = {  # name: (reader, line, the reason's text after file:line)
    "job_nested_too_deep": ("job", DEEP, ": not JSON (nested too deeply)"),
    "job_integer_past_digit_limit": ("job", b'{"id": "a", "seed": ' + DIGITS + b"}", ": not JSON (Exceeds the limit"),
    "job_seed_past_generator_range": ("job", b"{" + ROW + b', "seed": 1' + b"0" * 400 + b"}", ": seed: Input should"),
    "job_reference_with_nul": ("job", b'{"id": "a", "prompt": "p", "reference": "r\\u0000.wav"}', "control character"),
    "job_guidance_nan": ("job", b"{" + ROW + b', "guidance": NaN}', ": guidance: Input should be a finite number"),
    "job_steps_true": ("job", b"{" + ROW + b', "steps": true}', ": steps: Value error, true is a boolean, not a"),
    "job_prompt_lone_surrogate": ("job", b'{"id": "a", "prompt": "\\ud800", "reference": "r.wav"}', "lone surrogate"),
    "job_prompt_not_utf8": ("job", b'{"id": "a", "prompt": "\xff", "reference": "r.wav"}', "(byte 0xff at character"),
    "prompts_nested_too_deep": ("prompts", DEEP, ": not JSON (nested too deeply)"),
    "prompts_id_with_space": ("prompts", b'{"id": "a b", "prompt": "p", "reference": "r.wav"}', ": field 'id': 'a b'"),
    "prompts_reference_with_nul": ("prompts", b'{"id": "a", "prompt": "p", "reference": "\\u0000"}', "control char"),
    "prompts_blank_prompt": ("prompts", b'{"id": "a", "prompt": " ", "reference": "r.wav"}', "'prompt': is empty"),
    "collection_onset_integer_too_big_for_float": (
        "jsonl",
        b'{"clip": "a.wav", "events": [{"label": "dog", "onset": 1' + b"0" * 400 + b', "offset": 1}]}',
        " events[0]: field 'onset': 1000000000",
    ),
    "collection_size_infinity": ("jsonl", b"{" + CLIP + b', "size": Infinity}', ": field 'size': inf is not a whole"),
    "collection_size_true": ("jsonl", b"{" + CLIP + b', "size": true}', ": field 'size': True is not a whole"),
    "collection_caption_number": ("jsonl", b"{" + CLIP + b', "caption": 42}', ": field 'caption': 42 is not a string"),
    "collection_clip_with_nul": ("jsonl", b'{"clip": "a\\u0000.wav", "events": []}', "control character (U+0000"),
    "collection_csv_field_over_csv_limit": ("csv", b"x" * 200_000 + b",a,b,1,2", ": not a CSV row (field larger"),
    "corpus_field_over_csv_limit": ("corpus", b"x" * 200_000 + b",dog,a dog,1", ": not a CSV row (field larger"),
    "corpus_not_utf8": ("corpus", b"\xff.wav,dog,a dog,1", "'file': not valid UTF-8 (byte 0xff at"),
}


def _reasons(reader: str, data: bytes, folder: Path) -> list[str]:
    """The reasons ``reader`` gives for the one row ``data`` (each with its file:line)."""
    if reader == "job":
        job = read_job(str(fz.write_lines(folder / "job.jsonl", [fz.Line(data)])))
        return [e["reason"] for e in job.errors] + [f"kept {item.row.id}" for item in job.items]
    if reader == "prompts":
        items, failures = prompt_file_items(fz.write_lines(folder / "prompts.jsonl", [fz.Line(data)]))
        return [f"{f['item']}: {f['reason']}" for f in failures] + [f"kept {it.id}" for it in items]
    if reader == "corpus":
        _write_csv(folder / "metadata.csv", ("file", "label", "caption", "duration"), [fz.Line(data)])
        clips, rejects = read_corpus(folder)
        return [f"{x.item}: {x.reason}" for x in rejects] + [f"kept {c.file}" for c in clips]
    name = "m.jsonl" if reader == "jsonl" else "m.csv"
    if reader == "jsonl":
        fz.write_lines(folder / name, [fz.Line(data)])
    else:
        _write_csv(folder / name, CSV_COLUMNS, [fz.Line(data)])
    collection = read_collection(LocalSource(type="local", root=str(folder), manifest=name), folder)
    return [f"{x.item}: {x.reason}" for x in collection.rejects] + [f"kept {c.key}" for c in collection.clips]


@pytest.mark.parametrize("name", FOUND)
def test_what_the_fuzzing_found(name, tmp_path):
    reader, data, reason = FOUND[name]
    line = 2 if reader in ("csv", "corpus") else 1
    reasons = _reasons(reader, data, tmp_path)
    assert reasons and not any(r.startswith("kept") for r in reasons), reasons
    assert any(f":{line}" in r and reason in r for r in reasons), reasons


def test_a_path_python_cannot_open_is_a_missing_reference_not_a_crash():
    with pytest.raises(MissingObject, match="embedded null byte"):
        LocalFiles().read("ref\x00.wav")


# --- SERST manifests (cache, training, generate, evaluate) ----------------------------------------------------------


def _scene_row(r: random.Random, key: str) -> dict:
    onset = round(r.uniform(0, 3), 3)
    event = {"label": "dog", "onset": onset, "offset": onset + 0.5, "source": "audio/dog.flac"}
    ref = {"label": "dog", "audio": f"references/{key}_dog_0.wav", "spans": [[onset, onset + 0.5]]}
    caption = _text(r)
    return {
        "id": key,
        "split": "train",
        "audio": f"audio/{key}.wav",
        "duration": 4.0,
        "caption": caption,
        "events": [event],
        "references": [ref],
    }


SERST = fz.Schema(
    fields={"id": ("text", True), "audio": ("text", True), "caption": ("text", True), "duration": ("number", True)},
    good=_scene_row,
    key_field="id",
    # the stage that writes a manifest checks these; the reader checks types and finiteness
    accepts=frozenset(
        {("id", "blank"), ("audio", "blank"), ("caption", "blank"), ("duration", "huge"), ("duration", "negative")}
    ),
)


def test_serst_manifest_rows(tmp_path):
    """A SERST manifest is written by segment, so one bad row refuses the file (ManifestError naming file:line and
    field) rather than being skipped: each bad line after a good one, and each good one, is its own file."""
    lines = fz.json_lines(rng("fuzz:serst manifest"), size(300, 3000), SERST)
    first = fz.dumps(_scene_row(random.Random(0), "first"))
    path = tmp_path / "train.jsonl"
    for n, line in enumerate(lines, 1):
        path.write_bytes((line.data if line.kind == "duplicate" else first) + b"\n" + line.data + b"\n")
        if not line.bad:
            assert [s.id for s in read_manifest(path)] == ["first", line.key]
            continue
        try:
            read_manifest(path)
        except ManifestError as exc:
            message = str(exc)
        else:
            pytest.fail(f"line {n} ({line.kind}) was read")
        assert message.startswith(f"{path}:2: "), (n, line.kind, message)
        if line.field:
            assert f"field '{line.field}'" in message or "Invalid JSON" in message, (n, line.kind, message)
    bad = sum(line.bad for line in lines)
    record("fuzz", "SERST manifest rows", trials=len(lines), refused=bad, kept=len(lines) - bad, lost=0, duplicated=0)


@pytest.mark.parametrize("reader", ["job", "prompts", "jsonl"])
def test_a_row_with_a_raw_line_separator_in_a_string_is_kept_whole(reader, tmp_path):
    """Found by seed 0: JSON allows U+2028 and U+0085 raw inside a string, and str.splitlines cut such a row in
    two, losing it."""
    prompt = "a line\u2028separator and a next\x85line"
    rows = {
        "job": {"id": "a", "prompt": prompt, "reference": "r.wav"},
        "prompts": {"id": "a", "prompt": prompt, "reference": "r.wav"},
        "jsonl": {"clip": "a", "caption": prompt, "events": [{"label": "dog", "onset": 0, "offset": 1}]},
    }
    assert _reasons(reader, fz.dumps(rows[reader], ascii=False), tmp_path) == ["kept a"]


SERST_LINE = fz.dumps(_scene_row(random.Random(0), "s1"))
WHOLE_FILES = {  # name: (file, its bytes, the error's text): files a stage reads whole, refused with a domain error
    "manifest_not_utf8": (
        "train.jsonl",
        SERST_LINE + b"\n" + SERST_LINE.replace(b'"s1"', b'"\xff"'),
        ":2: field '<row>': Invalid JSON",
    ),
    "manifest_duration_nan": (
        "train.jsonl",
        SERST_LINE.replace(b"4.0", b"NaN"),
        ":1: field 'duration': Input should be a finite number",
    ),
    "manifest_id_repeats": ("train.jsonl", SERST_LINE + b"\n" + SERST_LINE, ":2: field 'id': 's1' repeats line 1"),
    "labels_nested_too_deep": (
        "labels.json",
        DEEP,
        ": expected {'labels': [...], 'captions': {...}} (maximum recursion",
    ),
    "labels_integer_past_digit_limit": ("labels.json", b'{"labels": [' + DIGITS + b"]}", "(Exceeds the limit (4300"),
    "labels_not_utf8": (
        "labels.json",
        b'{"labels": ["\xff"], "captions": {}}',
        "('utf-8' codec can't decode byte 0xff",
    ),
    "checksums_not_utf8": (
        "SHA256SUMS",
        b"\xff" * 64 + b"  a.wav\n",
        ": not UTF-8 text (invalid start byte at byte 0)",
    ),
}


@pytest.mark.parametrize("name", WHOLE_FILES)
def test_a_damaged_file_read_whole_is_refused_naming_it(name, tmp_path):
    from seap_model.data.fetch import DownloadError, read_checksums
    from seap_model.data.manifest import read_labels

    file, data, reason = WHOLE_FILES[name]
    path = tmp_path / file
    path.write_bytes(data)
    read = {"train.jsonl": read_manifest, "labels.json": lambda p: read_labels(p.parent), "SHA256SUMS": read_checksums}
    with pytest.raises((ManifestError, DownloadError)) as err:
        read[file](path)
    assert str(err.value).startswith(str(path)) and reason in str(err.value), str(err.value)
