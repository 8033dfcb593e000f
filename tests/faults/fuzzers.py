"""Generators for the fuzz tests: malformed rows (JSON lines and CSV) mixed with good ones, and malformed audio.

Every choice comes from the family's seeded ``random.Random`` (``ledger.rng``), so a failing trial is rebuilt
from the seed and its line number. A generated line knows what its reader must make of it: a good row carries
its ``key`` (kept exactly once), a bad row the ``field`` its reason must name (None: the row as a whole) and the
``kind`` of damage done to it (named in a failing assertion).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

MISSING = object()  # the field is left out of the row


@dataclass(frozen=True)
class Raw:
    """A value written into a JSON row as these exact bytes (literals json.dumps cannot write, invalid UTF-8)."""

    data: bytes


@dataclass(frozen=True)
class Line:
    data: bytes
    key: str | None = None  # a good row: the id it is kept under
    field: str | None = None  # a bad row: the field at fault (None: the row as a whole)
    kind: str = "good"

    @property
    def bad(self) -> bool:
        return self.key is None


# Good values: text in several scripts, bidirectional marks, combining characters, emoji, long but sane.
PROMPTS = (
    "a dog barking",
    "rain on a tin roof, then thunder",
    "صوت المطر على السطح",
    "雨の音と遠くの雷",
    "a bell \U0001f514 ringing",
    "e\u0301cho in a cave",
    "\u202bmixed RTL\u202c and LTR text",
    "a " + "very " * 300 + "long prompt",
    'quotes " and \\ backslashes',
    "a line\u2028separator and a next\x85line: JSON allows both raw inside a string",
)

# Bad values by kind of field: (name of the damage, value).
_WRONG_TYPE = (("list", [1, 2]), ("nested", {"a": {"b": {"c": [1, {"d": None}]}}}), ("bool", True))
_NOT_UNICODE = (("surrogate", "a\ud800b"), ("not_utf8", Raw(b'"a\xff\xfeb"')))
_STRING = (*_WRONG_TYPE, *_NOT_UNICODE, ("number", 42), ("float", 1.5))
_NUMBER = (
    *_WRONG_TYPE,
    ("nan", math.nan),
    ("inf", math.inf),
    ("-inf", -math.inf),
    ("1e400", Raw(b"1e400")),
    ("bigint", 10**400),
    ("string", "x1"),
    ("negative", -1.5),
    ("huge", 1e12),
)
BAD_VALUES: dict[str, tuple[tuple[str, object], ...]] = {
    "id": (*_STRING, ("rtl", "a\u202eb"), ("nul", "a\x00b"), ("space", "a b"), ("empty", ""), ("long", "i" * 300)),
    "text": (*_STRING, ("blank", "   ")),
    "path": (*_STRING, ("nul", "ref\x00.wav"), ("empty", "")),
    "number": _NUMBER,
    "count": (*_NUMBER, ("fraction", 1.5), ("zero", 0)),
    "events": (("object", {"label": "dog"}), ("string", "dog"), ("number", 3), ("not_utf8", Raw(b'"\xff"'))),
}

# Rows that are bad as a whole: not JSON, not an object, too deep or too long for any parser.
BAD_ROWS: tuple[tuple[str, bytes], ...] = (
    ("truncated", b'{"id": "x", "prompt": '),
    ("python_repr", b"{'id': 'x'}"),
    ("trailing_comma", b'{"id": "x",}'),
    ("list", b"[1, 2, 3]"),
    ("string", b'"a row"'),
    ("number", b"42"),
    ("null", b"null"),
    ("nan_literal", b"NaN"),
    ("deep", b"[" * 100_000 + b"]" * 100_000),
    ("digits", b'{"id": "x", "seed": ' + b"9" * 5000 + b"}"),
    ("huge_line", b"{" + b"x" * 300_000),
    ("not_utf8", b"\xff\xfe{\x00"),
)


@dataclass(frozen=True)
class Schema:
    """A reader's row: field -> (kind, required), the good row of a key, and what the reader accepts anyway
    (``accepts``: (field, damage) pairs that are valid input for it, e.g. a number as an id it converts)."""

    fields: dict[str, tuple[str, bool]]
    good: Callable[[random.Random, str], dict]
    key_field: str
    accepts: frozenset[tuple[str, str]] = frozenset()
    unknown_field: bool = True  # does the reader refuse fields it does not know?


def dumps(row: dict, ascii: bool = True) -> bytes:
    """A row as one JSON line (``ascii=False``: other characters raw, as UTF-8); ``Raw`` values go in as their
    bytes."""
    raws: list[bytes] = []

    def mark(value: object) -> str:
        raws.append(value.data)  # type: ignore[attr-defined]
        return f"@@raw{len(raws) - 1}@@"

    text = json.dumps(row, default=mark, ensure_ascii=ascii).encode()
    for i, data in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"'.encode(), data)
    return text


def json_lines(rng: random.Random, n: int, schema: Schema, bad_share: float = 0.6) -> list[Line]:
    """``n`` lines, about ``bad_share`` of them damaged: one field (a bad value, left out, an unknown field, an
    id seen before) or the whole row."""
    lines: list[Line] = []
    keys: list[str] = []
    for i in range(n):
        key = f"item-{i}"
        row = schema.good(rng, key)
        if rng.random() >= bad_share:
            lines.append(Line(dumps(row, ascii=rng.random() < 0.5), key=key))
            keys.append(key)
            continue
        what = rng.random()
        if what < 0.15:
            kind, data = rng.choice(BAD_ROWS)
            lines.append(Line(data, field=None, kind=f"row:{kind}"))
            continue
        if what < 0.22 and keys:
            row[schema.key_field] = rng.choice(keys)
            lines.append(Line(dumps(row), field=schema.key_field, kind="duplicate"))
            continue
        if what < 0.27 and schema.unknown_field:
            row["colour"] = "blue"
            lines.append(Line(dumps(row), field="colour", kind="unknown_field"))
            continue
        field = rng.choice(sorted(schema.fields))
        kind, required = schema.fields[field]
        choices = [*BAD_VALUES[kind], *((("missing", MISSING), ("null", None)) if required else ())]
        choices = [c for c in choices if (field, c[0]) not in schema.accepts]
        damage, value = rng.choice(choices)
        _set(row, field, value)
        lines.append(Line(dumps(row), field=field, kind=f"{field}:{damage}"))
    return lines


def _set(row: dict, field: str, value: object) -> None:
    """Set (or with MISSING remove) a field; ``events.0.onset`` is the onset of a row's only event."""
    *path, name = field.split(".")
    for part in path:
        if part.isdigit():
            row[:] = row[int(part) : int(part) + 1]
            row = row[0]
        else:
            row = row[part]
    if value is MISSING:
        row.pop(name, None)
    else:
        row[name] = value


def write_lines(path: Path, lines: list[Line]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line.data + b"\n" for line in lines))
    return path


# --- CSV ------------------------------------------------------------------------------------------------------------

_CSV_NUMBER = (("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("1e400", "1e400"), ("text", "x1"), ("empty", ""))
_CSV_TEXT = (("not_utf8", b"a\xff\xfeb"), ("empty", ""))
CSV_BAD_VALUES: dict[str, tuple[tuple[str, str | bytes], ...]] = {
    "path": (*_CSV_TEXT, ("nul", "a\x00b.wav"), ("absolute", "/etc/passwd"), ("dotdot", "../x.wav")),
    "label": (*_CSV_TEXT, ("punctuation", "!!!")),
    "text": _CSV_TEXT,
    "caption": _CSV_TEXT[:1],  # a collection composes an empty caption from the label captions
    "seconds": (*_CSV_NUMBER, ("negative", "-1.5")),
}
CSV_BAD_ROWS: tuple[tuple[str, bytes], ...] = (
    ("too_few", b"a,b"),
    ("too_many", b"a,b,c,d,e,f,g,h,i,j,k"),
    ("huge_field", b"x" * 200_000 + b",a,b,1,2"),
    ("nul_line", b"\x00\x00\x00,\x00"),
    ("not_utf8", b"\xff\xfe\xfd,\xfe,\xff,1,2"),
)


def csv_cell(value: str | bytes) -> bytes:
    data = value if isinstance(value, bytes) else value.encode("utf-8")
    if any(c in data for c in b',"\r\n'):
        return b'"' + data.replace(b'"', b'""') + b'"'
    return data


def csv_line(row: dict, columns: tuple[str, ...]) -> bytes:
    return b",".join(csv_cell(row.get(c, "")) for c in columns)


# --- audio ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioCase:
    name: str
    bad: bool
    kind: str


def noise(rng: random.Random, seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    gen = np.random.default_rng(rng.randrange(2**32))
    return (0.3 * gen.standard_normal((max(0, round(seconds * sr)), channels))).astype(np.float32)


def _wav_bytes(data: np.ndarray, sr: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, data, sr, subtype=subtype, format=fmt)
    return buf.getvalue()


def audio_file(rng: random.Random, kind: str) -> bytes:
    """The bytes of one audio file of ``kind`` (see ``AUDIO_KINDS``)."""
    sr = rng.choice((8000, 16000, 48000))
    good = noise(rng, rng.uniform(0.6, 1.0), sr)
    if kind == "good_wav":
        return _wav_bytes(good, sr)
    if kind == "good_flac":
        return _wav_bytes(good, sr, "PCM_16", "FLAC")
    if kind == "good_stereo":
        return _wav_bytes(noise(rng, 0.7, sr, 2), sr)
    if kind == "good_float":
        return _wav_bytes(good, sr, "FLOAT")
    if kind == "rate_44k1":
        return _wav_bytes(noise(rng, 0.7, 44100), 44100)
    if kind == "rate_1k":
        return _wav_bytes(noise(rng, 1.5, 1000), 1000)
    if kind == "rate_192k":
        return _wav_bytes(noise(rng, 0.7, 192000), 192000)
    if kind == "channels_6":
        return _wav_bytes(noise(rng, 0.7, sr, 6), sr)
    if kind == "empty_file":
        return b""
    if kind == "zero_samples":
        return _wav_bytes(np.zeros((0, 1), np.float32), sr)
    if kind == "too_short":
        return _wav_bytes(noise(rng, 0.1, sr), sr)
    if kind == "silent":
        return _wav_bytes(np.zeros((sr, 1), np.float32), sr)
    if kind in ("nan", "inf"):
        data = good.copy()
        data[rng.randrange(len(data))] = math.nan if kind == "nan" else -math.inf
        return _wav_bytes(data, sr, "FLOAT")
    if kind == "text_as_wav":
        return b"this is not audio, just some text someone named clip.wav\n" * rng.randint(1, 50)
    if kind == "garbage":
        return rng.randbytes(rng.randint(1, 5000))
    if kind == "riff_garbage":
        return b"RIFF" + rng.randbytes(4) + b"WAVE" + rng.randbytes(rng.randint(0, 200))
    if kind == "header_only":
        return _wav_bytes(good, sr)[:44]
    if kind == "truncated_header":
        return _wav_bytes(good, sr)[: rng.randint(1, 43)]
    if kind == "bad_rate":  # a header declaring 0 Hz
        data = bytearray(_wav_bytes(good, sr))
        data[24:28] = (0).to_bytes(4, "little")
        return bytes(data)
    if kind == "flac_bad_bytes":
        data = bytearray(_wav_bytes(good, sr, "PCM_16", "FLAC"))
        for _ in range(50):
            data[rng.randrange(100, len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == "truncated_wav":  # libsndfile reads the frames that are there (0.6 s of 2 s): a usable clip
        return _wav_bytes(noise(rng, 2.0, sr), sr)[: 44 + round(0.6 * sr) * 2]
    if kind == "flac_truncated":
        data = _wav_bytes(good, sr, "PCM_16", "FLAC")
        return data[: rng.randint(50, 400)]
    raise ValueError(kind)


# kind -> bad? (the reference loader's verdict: a reference must decode, be finite, 0.5 s or longer, not silent;
# None: either, as long as a rejection names the file: FLAC with bytes overwritten may still decode)
AUDIO_KINDS: dict[str, bool | None] = {
    "good_wav": False,
    "good_flac": False,
    "good_stereo": False,
    "good_float": False,
    "rate_44k1": False,
    "rate_1k": False,
    "rate_192k": False,
    "channels_6": False,
    "empty_file": True,
    "zero_samples": True,
    "too_short": True,
    "silent": True,
    "nan": True,
    "inf": True,
    "text_as_wav": True,
    "garbage": True,
    "riff_garbage": True,
    "header_only": True,
    "truncated_header": True,
    "bad_rate": True,
    "flac_truncated": True,
    "truncated_wav": False,
    "flac_bad_bytes": None,
}
