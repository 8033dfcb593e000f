"""Batch jobs: the JSONL format, validated row by row, and what a finished job writes.

Fields: ``id`` (letters, digits, ``.``, ``_``, ``-``), ``prompt``, ``reference``, ``format`` (``wav``/``flac``)
and optionally any of ``ROW_SAMPLING``, the ``SamplingParams`` fields a row may set for itself (``steps``,
``guidance``, ``text_guidance``, ``style_guidance``, ``scheduler``, ``duration``, ``seed``), validated by those
fields' own definitions; a row that does not set one gets the job's. ``reference`` is a path under the job
file's folder, or for a job on S3 an ``s3://`` URI in the job's own bucket; ``..``, absolute paths, other
buckets and URLs to other hosts are refused (symbolic links out of the folder too, by ``LocalStorage``, when
the row runs). A bad row becomes an error naming its line and field; the other rows still run.

``finish`` removes the outputs that are no longer current, then writes ``errors.jsonl``, ``manifest.json``
(id -> output, the errors) and ``summary.json``, and uploads nothing when the manifest is already the current one.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic.fields import FieldInfo

from seap_model.batch.engine import ITEM_ID, Request, prune
from seap_model.batch.storage import (
    MissingObject,
    S3Storage,
    Storage,
    StorageError,
    UnsafeKey,
    open_storage,
    safe_key,
    split_s3_uri,
)
from seap_model.config import SamplingParams
from seap_model.rows import BadRow, decode, json_row, lines, utf8_problem

log = logging.getLogger(__name__)
MANIFEST, SUMMARY, ERRORS = "manifest.json", "summary.json", "errors.jsonl"
ROW_SAMPLING = ("steps", "guidance", "text_guidance", "style_guidance", "scheduler", "duration", "seed")


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    id: str = Field(pattern=ITEM_ID.pattern)
    prompt: str
    reference: str
    format: Literal["wav", "flac"] = "wav"

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty")
        return _text(v)

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: str) -> str:
        return _text(v)

    @field_validator(*ROW_SAMPLING, mode="before", check_fields=False)
    @classmethod
    def _not_boolean(cls, v: object) -> object:
        if isinstance(v, bool):  # pydantic takes true as 1; in a row it is a mistake
            raise ValueError(f"{str(v).lower()} is a boolean, not a number")
        return v

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if v in (".", ".."):
            raise ValueError("must not be '.' or '..'")
        return v


def _text(value: str) -> str:
    problem = utf8_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _override(info: FieldInfo) -> tuple:
    """A SamplingParams field as a row's optional override: its type and constraints, default None (the job's)."""
    return info.annotation | None, FieldInfo.merge_field_infos(info, default=None)


JobRow = create_model(
    "JobRow",
    __base__=_Row,
    __doc__="One row of a job: the item, and the sampling settings it sets for itself.",
    **{name: _override(SamplingParams.model_fields[name]) for name in ROW_SAMPLING},
)


@dataclass(frozen=True)
class JobItem:
    row: JobRow
    line: int
    reference_key: str  # in the job's storage

    def request(self, defaults: SamplingParams) -> Request:
        """The engine's request: the row's own settings over the job's ``defaults``."""
        own = {name: getattr(self.row, name) for name in ROW_SAMPLING if getattr(self.row, name) is not None}
        sampling = SamplingParams.model_validate({**defaults.model_dump(), **own})
        return Request(self.row.id, self.row.prompt, self.reference_key, sampling, self.row.format)


@dataclass
class Job:
    uri: str
    storage: Storage  # where the job's references are read from
    items: list[JobItem]
    errors: list[dict]


def job_location(uri: str) -> tuple[Storage, str]:
    """(storage references resolve in, the job file's key there): the bucket root for S3, the file's folder
    for a local job."""
    if str(uri).startswith("s3://"):
        bucket, key = split_s3_uri(str(uri))
        return S3Storage(bucket), safe_key(key)
    if "://" in str(uri):
        raise StorageError(f"{uri!r}: a job is an s3:// URI or a local path")
    path = str(uri)
    folder, name = posixpath.split(path.replace("\\", "/"))
    return open_storage(folder or "."), name


def resolve_reference(reference: str, storage: Storage, job_key: str) -> str:
    """The key of a row's reference in the job's storage; UnsafeKey for anything outside it."""
    if reference.startswith("s3://"):
        if not isinstance(storage, S3Storage):
            raise UnsafeKey(f"{reference!r}: an s3:// reference needs a job on S3")
        bucket, key = split_s3_uri(reference)
        if bucket != storage.bucket:
            raise UnsafeKey(f"{reference!r} is outside the job's bucket {storage.bucket!r}")
        return safe_key(key)
    if "://" in reference or reference.startswith("//"):
        raise UnsafeKey(f"{reference!r}: URLs to other hosts are not references")
    safe_key(reference)  # refuses '..' and absolute paths before joining
    return safe_key(posixpath.join(posixpath.dirname(job_key), reference))


def _field_errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors())


def parse_job(text: str, uri: str, storage: Storage, job_key: str) -> Job:
    """Rows of a JSONL job; each bad row is an error ``{"line", "id", "reason"}`` naming the field."""
    items: list[JobItem] = []
    errors: list[dict] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(lines(text), 1):
        if not line.strip():
            continue
        where = f"{uri}:{n}"
        try:
            data = json_row(line)
        except BadRow as exc:
            errors.append({"line": n, "id": None, "reason": f"{where}: {exc}"})
            continue
        raw_id = data.get("id")
        try:
            row = JobRow.model_validate(data)
        except ValidationError as exc:
            errors.append({"line": n, "id": raw_id, "reason": f"{where}: {_field_errors(exc)}"})
            continue
        if row.id in seen:
            errors.append({"line": n, "id": row.id, "reason": f"{where}: id: repeats line {seen[row.id]}"})
            continue
        try:
            key = resolve_reference(row.reference, storage, job_key)
        except UnsafeKey as exc:
            errors.append({"line": n, "id": row.id, "reason": f"{where}: reference: {exc}"})
            continue
        seen[row.id] = n
        items.append(JobItem(row, n, key))
    return Job(uri, storage, items, errors)


def read_job(uri: str) -> Job:
    """Read and validate the job at ``uri`` (s3:// or a local path)."""
    storage, key = job_location(uri)
    data = storage.read(key)
    return parse_job(decode(data), str(uri), storage, key)


def finish(job: Job, out_uri: str, outcomes: list[dict], seconds: float) -> dict:
    """Remove outputs no longer current, write ``errors.jsonl``, ``manifest.json`` and ``summary.json`` unless the
    manifest is already current; returns the summary."""
    out = open_storage(out_uri)
    line = {item.row.id: item.line for item in job.items}
    errors = sorted(
        [{"line": e["line"], "id": e["id"], "reason": e["reason"]} for e in job.errors]
        + [{"line": line[o["id"]], "id": o["id"], "reason": o["reason"]} for o in outcomes if o["status"] == "failed"],
        key=lambda e: e["line"],
    )
    outputs = {o["id"]: o["audio"] for o in sorted(outcomes, key=lambda o: o["id"]) if "audio" in o}
    bad_ids = {e["id"] for e in job.errors if isinstance(e["id"], str) and ITEM_ID.match(e["id"])}
    removed = prune(out, {**dict.fromkeys(bad_ids), **dict.fromkeys(line), **outputs})
    manifest = {"job": job.uri, "outputs": outputs, "errors": errors}
    counts = {s: sum(o["status"] == s for o in outcomes) for s in ("generated", "skipped", "failed")}
    summary = {
        "job": job.uri,
        "rows": len(job.items) + len(job.errors),
        **counts,
        "bad_rows": len(job.errors),
        "errors": len(errors),
        "seconds": round(seconds, 2),
        "generated_per_second": round(counts["generated"] / seconds, 3) if seconds > 0 else None,
    }
    body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    try:
        current = out.read(MANIFEST) == body
    except MissingObject:
        current = False
    if current and not counts["generated"] and not removed:
        log.info("batch %s: nothing to do (%d outputs current); nothing uploaded", job.uri, len(outputs))
        return {**summary, "uploaded": False}
    out.write(ERRORS, "".join(json.dumps(e) + "\n" for e in errors).encode())
    out.write(SUMMARY, (json.dumps(summary, indent=1) + "\n").encode())
    out.write(MANIFEST, body)  # last: a manifest says the run that wrote it finished
    return {**summary, "uploaded": True}
