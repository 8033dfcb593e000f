"""Readers for collections whose clips already carry strong labels (event label, onset, offset).

Two user formats (paths relative to the collection root) and the AudioSet-strong layout:

**JSONL**, one clip per line::

    {"clip": "audio/park_01.flac", "caption": "a dog barks as a car passes",
     "events": [{"label": "dog_bark", "onset": 0.52, "offset": 1.31}, {"label": "car", "onset": 2.0, "offset": 6.5}],
     "group": "recording_17", "sha256": "<hex>", "size": 482113}

**CSV**, one event per row (a clip's rows need not be adjacent; its caption may be left empty after the first)::

    clip,caption,label,onset,offset,group,sha256,size
    audio/park_01.flac,a dog barks as a car passes,dog_bark,0.52,1.31,recording_17,,

``clip``, ``label``, ``onset`` and ``offset`` (seconds) are required; ``caption`` (empty: composed from the
label captions), ``group`` (clips sharing it stay in one split; default: the clip itself), ``sha256`` and
``size`` (checked by the download) are optional. Labels are normalised to lower-case identifiers
(``"Dog bark"`` -> ``dog_bark``); an optional labels CSV (``label,caption``) lists the known labels and
their captions, and events with other labels are rejected.

**AudioSet strong (WavCaps copy)**: the WavCaps captions JSON (``{"data": [{"id": "Y<youtube id>.wav",
"caption": ...}]}``), the AudioSet strong-label TSVs (``segment_id, start_time_seconds, end_time_seconds,
label`` with ``segment_id = <youtube id>_<start ms>`` and a label MID) and ``mid_to_display_name.tsv``; audio
at ``<audio_dir>/Y<youtube id><audio_ext>``. Clips are grouped by YouTube id.

Every row that cannot be used becomes a Reject naming file:line and field; nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from seap_model.config import AudioSetStrongSource, HttpSource, LocalSource, S3Source
from seap_model.data.corpus import CorpusError, Reject
from seap_model.data.fields import (
    RowError,
    check_utf8,
    clip_key,
    label_id,
    optional_sha256,
    optional_size,
    span,
    string_field,
)
from seap_model.rows import BadRow, csv_rows, decode, json_row, lines, shown

CollectionSource = LocalSource | HttpSource | S3Source | AudioSetStrongSource
CSV_COLUMNS = ("clip", "caption", "label", "onset", "offset", "group", "sha256", "size")


@dataclass(frozen=True)
class StrongEvent:
    """One strong label; ``item`` is where it was read (file:line, and the list index for JSONL)."""

    label: str
    onset: float
    offset: float
    item: str


@dataclass
class StrongClip:
    """One clip of a collection: ``key`` is its audio path relative to the collection root."""

    key: str
    caption: str
    group: str
    item: str
    events: list[StrongEvent] = field(default_factory=list)
    sha256: str | None = None
    size: int | None = None


@dataclass
class Collection:
    """What a reader found: usable clips, rejected rows, label -> caption, and the event entries read."""

    clips: list[StrongClip]
    rejects: list[Reject]
    captions: dict[str, str]
    events_read: int


def manifest_files(source: CollectionSource) -> list[str]:
    """The metadata files of a collection (fetched before its audio)."""
    if isinstance(source, AudioSetStrongSource):
        return [source.captions, *source.strong_labels, source.label_names]
    return [source.manifest, *([source.labels] if source.labels else [])]


def read_collection(source: CollectionSource, root: str | Path) -> Collection:
    """Read the collection's metadata from ``root`` (the staged copy) into clips, rejects and captions."""
    root = Path(root)
    if isinstance(source, AudioSetStrongSource):
        return _read_audioset(source, root)
    vocabulary = _read_vocabulary(root / source.labels) if source.labels else None
    path = root / source.manifest
    reader = _JsonlReader(path, vocabulary) if path.suffix.lower() == ".jsonl" else _CsvReader(path, vocabulary)
    return reader.read()


def _text(path: Path) -> str:
    """A metadata file's text; undecodable bytes survive as surrogates so the row holding them is rejected."""
    if not path.is_file():
        raise CorpusError(f"{path}: metadata file not found")
    return decode(path.read_bytes())


def _read_vocabulary(path: Path) -> dict[str, str]:
    """The labels CSV (``label,caption``) as label id -> caption; a bad row stops the run (it is configuration)."""
    fields, rows = csv_rows(_text(path))
    if not {"label", "caption"} <= set(fields or []):
        raise CorpusError(f"{path}: expected columns 'label,caption', got {fields}")
    vocabulary: dict[str, str] = {}
    for line, row in rows:
        try:
            if isinstance(row, BadRow):
                raise RowError(str(row))
            label = label_id(check_utf8("label", row["label"] or ""))
            caption = check_utf8("caption", (row["caption"] or "").strip())
        except RowError as exc:
            raise CorpusError(f"{path}:{line}: {exc}") from None
        if not caption:
            raise CorpusError(f"{path}:{line}: field 'caption' is empty")
        vocabulary.setdefault(label, caption)
    return vocabulary


class _Labels:
    """Maps label text to a label id, checking it against the vocabulary if there is one."""

    def __init__(self, vocabulary: dict[str, str] | None, source: str):
        self.vocabulary, self.source = vocabulary, source
        self.captions: dict[str, str] = dict(vocabulary or {})

    def __call__(self, text: object) -> str:
        if not isinstance(text, str):
            raise RowError(f"field 'label': {shown(text)} is not a string")
        label = label_id(check_utf8("label", text))
        if self.vocabulary is not None and label not in self.vocabulary:
            raise RowError(f"field 'label': unknown label {text!r} (not in {self.source})", "unknown_label")
        self.captions.setdefault(label, label.replace("_", " "))
        return label


class _Builder:
    """Collects clips, events and rejects while a reader walks its rows."""

    def __init__(self) -> None:
        self.clips: dict[str, StrongClip] = {}
        self.rejects: list[Reject] = []
        self.events_read = 0

    def reject(self, item: str, reason: str, rule: str, clips: int = 0, events: int = 1) -> None:
        """Record a reject; by default one event entry (a clip entry passes ``clips=1`` and its event count)."""
        self.rejects.append(Reject(item, reason, rule, clips, events))

    def add_event(self, clip: StrongClip, event: StrongEvent) -> None:
        """Add an event unless the clip already has the same one (then it is rejected as a duplicate)."""
        span = (event.label, event.onset, event.offset)
        same = next((e for e in clip.events if (e.label, e.onset, e.offset) == span), None)
        if same is not None:
            self.reject(event.item, f"duplicate of {same.item}", "duplicate")
            return
        clip.events.append(event)

    def collection(self, labels: dict[str, str]) -> Collection:
        clips = []
        for clip in self.clips.values():
            if clip.events:
                clips.append(clip)
            else:
                self.reject(clip.key, f"no usable strong labels (defined at {clip.item})", "no_events", 1, 0)
        used = {e.label for c in clips for e in c.events}
        captions = {label: caption for label, caption in sorted(labels.items()) if label in used}
        return Collection(clips, self.rejects, captions, self.events_read)


class _ManifestReader(_Builder):
    def __init__(self, path: Path, vocabulary: dict[str, str] | None):
        super().__init__()
        self.path, self.labels = path, _Labels(vocabulary, "the labels file")


class _JsonlReader(_ManifestReader):
    def read(self) -> Collection:
        for lineno, line in enumerate(lines(_text(self.path)), start=1):
            if line.strip():
                self._row(f"{self.path.name}:{lineno}", line)
        return self.collection(self.labels.captions)

    def _row(self, item: str, line: str) -> None:
        try:
            row = json_row(line)
        except BadRow as exc:
            return self.reject(item, str(exc), "bad_row", 1, 0)
        events = row.get("events")
        count = len(events) if isinstance(events, list) else 0
        self.events_read += count
        try:
            unknown = sorted(set(row) - {"clip", "caption", "events", "group", "sha256", "size"})
            if unknown:
                raise RowError(f"unknown field(s) {unknown}")
            key = clip_key(row.get("clip"))
            if key in self.clips:
                raise RowError(f"field 'clip': {key!r} is already listed at {self.clips[key].item}")
            caption = string_field("caption", row.get("caption"))
            if not isinstance(events, list):
                raise RowError("field 'events': expected a list of {label, onset, offset}")
            group = string_field("group", row.get("group")) or key
            sha256, size = optional_sha256(row.get("sha256")), optional_size(row.get("size"))
            clip = StrongClip(key, caption, group, item, [], sha256, size)
        except RowError as exc:
            return self.reject(item, str(exc), exc.rule, 1, count)
        self.clips[key] = clip
        for i, event in enumerate(events):
            where = f"{item} events[{i}]"
            try:
                if not isinstance(event, dict) or set(event) != {"label", "onset", "offset"}:
                    raise RowError("expected exactly the fields label, onset, offset")
                label = self.labels(event["label"])
                onset, offset = span(event["onset"], event["offset"])
            except RowError as exc:
                self.reject(where, str(exc), exc.rule)
                continue
            self.add_event(clip, StrongEvent(label, onset, offset, where))


class _CsvReader(_ManifestReader):
    def read(self) -> Collection:
        fields, rows = csv_rows(_text(self.path))
        missing = [c for c in ("clip", "label", "onset", "offset") if c not in (fields or [])]
        if missing:
            raise CorpusError(f"{self.path}: missing column(s) {missing} (header: {fields})")
        unknown = sorted(set(fields or []) - set(CSV_COLUMNS))
        if unknown:
            raise CorpusError(f"{self.path}: unknown column(s) {unknown}; columns are {list(CSV_COLUMNS)}")
        for line, row in rows:
            self.events_read += 1
            item = f"{self.path.name}:{line}"
            try:
                if isinstance(row, BadRow):
                    raise RowError(str(row))
                self._row(item, row)
            except RowError as exc:
                self.reject(item, str(exc), exc.rule)
        return self.collection(self.labels.captions)

    def _row(self, item: str, row: dict) -> None:
        if None in row:
            raise RowError(f"too many fields ({len(row) - 1 + len(row[None])})")
        if any(value is None for value in row.values()):
            raise RowError("too few fields")
        key = clip_key(row["clip"])
        caption = check_utf8("caption", (row.get("caption") or "").strip())
        clip = self.clips.get(key)
        if clip is None:
            group = check_utf8("group", (row.get("group") or "").strip() or key)
            sha256, size = optional_sha256(row.get("sha256")), optional_size(row.get("size"))
            clip = self.clips[key] = StrongClip(key, caption, group, item, [], sha256, size)
        elif caption and clip.caption and caption != clip.caption:
            raise RowError(f"field 'caption': {caption!r} differs from {clip.caption!r} given at {clip.item}")
        clip.caption = clip.caption or caption
        label = self.labels(row["label"])
        onset, offset = span(row["onset"], row["offset"])
        self.add_event(clip, StrongEvent(label, onset, offset, item))


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    for lineno, line in enumerate(lines(_text(path)), start=1):
        if line.strip():
            yield lineno, line.split("\t")


def _read_audioset(source: AudioSetStrongSource, root: Path) -> Collection:
    builder = _Builder()
    names: dict[str, str] = {}
    for lineno, fields in _tsv_rows(root / source.label_names):
        if len(fields) != 2:
            raise CorpusError(f"{root / source.label_names}:{lineno}: expected 'mid<TAB>display name'")
        if lineno > 1 or fields[0].startswith("/"):  # an optional header line
            names[fields[0]] = check_utf8("display_name", fields[1].strip())
    labels = {mid: label_id(name) for mid, name in names.items()}
    captions = {labels[mid]: name.lower() for mid, name in names.items()}

    by_video: dict[str, StrongClip] = {}
    captions_path = root / source.captions
    try:
        entries = json.loads(_text(captions_path))["data"]
        if not isinstance(entries, list):
            raise TypeError(f"'data' is {type(entries).__name__}, not a list")
    except (RecursionError, ValueError, KeyError, TypeError) as exc:  # ValueError: not JSON
        raise CorpusError(f"{captions_path}: expected {{'data': [{{'id', 'caption'}}, ...]}} ({exc})") from None
    for i, entry in enumerate(entries):
        item = f"{captions_path.name}:data[{i}]"
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise RowError("expected an object with a string 'id'")
            stem = Path(check_utf8("id", entry["id"])).stem
            caption = check_utf8("caption", str(entry.get("caption") or "").strip())
        except RowError as exc:
            builder.reject(item, str(exc), exc.rule, 1, 0)
            continue
        video = stem[1:] if stem.startswith("Y") and len(stem) == 12 else stem
        if video in by_video:
            builder.reject(item, f"id {stem!r} is already listed at {by_video[video].item}", "duplicate", 1, 0)
            continue
        key = f"{source.audio_dir}/{stem}{source.audio_ext}"
        by_video[video] = builder.clips[key] = StrongClip(key, caption, video, item)

    for tsv in source.strong_labels:
        path = root / tsv
        for lineno, fields in _tsv_rows(path):
            if lineno == 1 and fields[0] == "segment_id":
                continue
            builder.events_read += 1
            item = f"{path.name}:{lineno}"
            try:
                if len(fields) != 4:
                    raise RowError(f"expected 4 tab-separated fields, got {len(fields)}")
                segment, onset, offset, mid = fields
                start, end = span(onset, offset)
                if mid not in labels:
                    raise RowError(
                        f"field 'label': unknown label {mid!r} (not in {source.label_names})", "unknown_label"
                    )
            except RowError as exc:
                builder.reject(item, str(exc), exc.rule)
                continue
            video = segment.rsplit("_", 1)[0]
            if video not in by_video:
                builder.reject(item, f"segment {segment!r} has no clip in {source.captions}", "no_clip")
                continue
            builder.add_event(by_video[video], StrongEvent(labels[mid], start, end, item))
    return builder.collection(captions)
