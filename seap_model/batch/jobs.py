"""The batch job format: JSONL, one item per line, validated row by row.

Fields: ``id`` (letters, digits, ``.``, ``_``, ``-``), ``prompt``, ``reference``, and optionally ``duration``
(seconds), ``seed``, ``steps``, ``guidance`` or ``text_guidance``/``style_guidance``, ``scheduler`` (one of
``SCHEDULERS``) and ``format`` (``wav``/``flac``). ``reference`` is a path under the job file's folder, or for a
job on S3 an ``s3://`` URI in the job's own bucket; ``..``, absolute paths, other buckets and URLs to other hosts
are refused. A bad row becomes an error naming its line and field; the other rows still run.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from seap_model.batch.storage import S3Storage, Storage, StorageError, UnsafeKey, open_storage, safe_key, split_s3_uri
from seap_model.config import SCHEDULERS


class JobRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")
    prompt: str
    reference: str
    duration: float | None = Field(None, gt=0, le=60)
    seed: int = Field(0, ge=0)
    steps: int | None = Field(None, gt=0, le=1000)
    guidance: float | None = Field(None, ge=0, le=50)
    text_guidance: float | None = Field(None, ge=0, le=50)
    style_guidance: float | None = Field(None, ge=0, le=50)
    scheduler: Literal[SCHEDULERS] | None = None  # type: ignore[valid-type]
    format: Literal["wav", "flac"] = "wav"

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty")
        return v

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if v in (".", ".."):
            raise ValueError("must not be '.' or '..'")
        return v


@dataclass(frozen=True)
class JobItem:
    row: JobRow
    line: int
    reference_key: str  # in the job's storage


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
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{uri}:{n}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append({"line": n, "id": None, "reason": f"{where}: not JSON ({exc.msg})"})
            continue
        raw_id = data.get("id") if isinstance(data, dict) else None
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
    return parse_job(data.decode("utf-8", errors="replace"), str(uri), storage, key)
