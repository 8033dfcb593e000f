"""Batch generation of a job into a storage location: content-addressed outputs, sidecars, errors, manifest.

The orchestration (Prefect tasks, retries, a Dask cluster) is in ``flows/batch_generate.py``; everything it runs
is here, so the same code runs from a plain Python call.

* ``plan`` groups rows that can share a U-Net call (same duration, steps, guidance, scheduler) and sorts each
  group by id before cutting it into batches, so the batches, and with them every clip's bytes, do not depend
  on the order of the rows (nor on which worker runs which batch).
* ``run_batch`` reads each row's reference, derives its output key from the item id and a hash of everything
  that makes the clip (prompt, reference bytes, sampling, duration, format, model and generation code), skips
  rows whose output is complete, and generates the rest together. It writes ``<id>-<hash16>.<format>`` then its
  sidecar ``<id>-<hash16>.json`` (prompt, reference sha256, every setting, model hash, timings): the sidecar is
  the completion marker, and an object is visible only once written whole (``storage``). A bad row (missing,
  unreadable, short or silent reference, failed or non-finite generation) becomes an error; transient storage
  errors are raised, for the caller to retry.
* ``finish`` writes ``errors.jsonl``, ``manifest.json`` (id -> output, the errors) and ``summary.json``, and
  uploads nothing when the manifest is already the current one.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from seap_model.audio import AudioError
from seap_model.batch.jobs import Job, JobItem
from seap_model.batch.storage import MissingObject, open_storage
from seap_model.config import SamplingParams
from seap_model.fingerprint import code_fingerprint
from seap_model.generation import load_reference, render
from seap_model.hashing import path_digest

log = logging.getLogger(__name__)
MANIFEST, SUMMARY, ERRORS = "manifest.json", "summary.json", "errors.jsonl"


@dataclass(frozen=True)
class Defaults:
    """What a row that does not say gets."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    duration: float = 2.08


@dataclass(frozen=True, order=True)
class Settings:
    """What the rows of one batch share."""

    duration: float
    steps: int
    guidance: float
    text_guidance: float | None
    style_guidance: float | None
    scheduler: str | None
    precision: str
    vocoder_iterations: int | None

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            scheduler=self.scheduler,
            precision=self.precision,
            vocoder_iterations=self.vocoder_iterations,
            steps=self.steps,
            guidance=self.guidance,
            text_guidance=self.text_guidance,
            style_guidance=self.style_guidance,
        )


def settings_of(item: JobItem, defaults: Defaults) -> Settings:
    row, base = item.row, defaults.sampling
    return Settings(
        duration=row.duration if row.duration is not None else defaults.duration,
        steps=row.steps if row.steps is not None else base.steps,
        guidance=row.guidance if row.guidance is not None else base.guidance,
        text_guidance=row.text_guidance if row.text_guidance is not None else base.text_guidance,
        style_guidance=row.style_guidance if row.style_guidance is not None else base.style_guidance,
        scheduler=row.scheduler if row.scheduler is not None else base.scheduler,
        precision=base.precision,
        vocoder_iterations=base.vocoder_iterations,
    )


def plan(items: list[JobItem], defaults: Defaults, batch_size: int) -> list[list[JobItem]]:
    """Batches of at most ``batch_size`` rows sharing their settings, independent of the rows' order."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    groups: dict[Settings, list[JobItem]] = {}
    for item in items:
        groups.setdefault(settings_of(item, defaults), []).append(item)
    batches = []
    for key in sorted(groups, key=repr):
        rows = sorted(groups[key], key=lambda i: i.row.id)
        batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    return batches


@functools.lru_cache(maxsize=2)
def load_pipeline(path: str):
    """The pipeline at ``path`` and what identifies it, loaded once per process (one per Dask worker)."""
    from seap_model.pipeline import SEAPPipeline

    model_hash = path_digest(path)
    if model_hash is None:
        raise FileNotFoundError(f"{path}: no saved pipeline")
    pipe = SEAPPipeline.from_pretrained(path)
    if torch.cuda.is_available():  # a GPU worker (Dask's CUDA_VISIBLE_DEVICES picks which); noise stays on CPU
        pipe.to("cuda")
    pipe.set_progress_bar_config(disable=True)
    return pipe, {"model_sha256": model_hash, "code_sha256": code_fingerprint("generate")}


def inputs_digest(item: JobItem, reference_sha256: str, settings: Settings, provenance: dict) -> str:
    what = {
        "prompt": item.row.prompt,
        "reference_sha256": reference_sha256,
        "seed": item.row.seed,
        "format": item.row.format,
        "settings": settings.__dict__,
        **provenance,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def output_keys(item_id: str, digest: str, fmt: str) -> tuple[str, str]:
    stem = f"{item_id}-{digest[:16]}"
    return f"{stem}.{fmt}", f"{stem}.json"


def encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    data = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    sf.write(buf, data, sample_rate, subtype="PCM_16", format=fmt.upper())
    return buf.getvalue()


@dataclass
class _Todo:
    item: JobItem
    id: str
    prompt: str
    seed: int
    record: dict
    keys: tuple[str, str]


def run_batch(
    pipeline: str, job_storage_uri: str, out_uri: str, batch: list[JobItem], defaults: Defaults, workers: int = 1
) -> list[dict]:
    """Generate one batch (rows sharing their settings); returns one outcome per row: ``generated``,
    ``skipped`` (its output is complete) or ``failed`` (with the reason). Storage errors that may pass
    (connection, timeout, 5xx) are raised for the caller to retry; outputs already written are then skipped."""
    pipe, provenance = load_pipeline(pipeline)
    source, out = open_storage(job_storage_uri, workers), open_storage(out_uri, workers)
    settings = settings_of(batch[0], defaults)
    outcomes, todo, refs = [], [], []
    with tempfile.TemporaryDirectory(prefix="seap-refs-") as tmp:
        for item in batch:
            row = item.row
            try:
                data = source.read(item.reference_key)
            except MissingObject as exc:
                outcomes.append(_failed(item, f"reference: {exc}"))
                continue
            sha = hashlib.sha256(data).hexdigest()
            digest = inputs_digest(item, sha, settings, provenance)
            keys = output_keys(row.id, digest, row.format)
            if out.exists(keys[1]):
                outcomes.append({"id": row.id, "line": item.line, "status": "skipped", "audio": keys[0]})
                continue
            path = Path(tmp) / f"{len(refs)}-{Path(item.reference_key).name}"
            path.write_bytes(data)
            try:
                refs.append(load_reference(path, pipe.sample_rate))
            except AudioError as exc:
                outcomes.append(_failed(item, str(exc).replace(str(path), f"{source.describe()}/{item.reference_key}")))
                continue
            record = {
                "id": row.id,
                "prompt": row.prompt,
                "reference": f"{source.describe()}/{item.reference_key}",
                "reference_sha256": sha,
                "seed": row.seed,
                "format": row.format,
                **settings.__dict__,
                **provenance,
                "inputs_sha256": digest,
            }
            todo.append(_Todo(item, row.id, row.prompt, row.seed, record, keys))
    if not todo:
        return outcomes
    start = time.perf_counter()
    rendered = render(
        pipe,
        [(t, t.record, r) for t, r in zip(todo, refs, strict=True)],
        settings.sampling(),
        settings.duration,
        seed_of=lambda t: t.seed,
    )
    seconds = (time.perf_counter() - start) / len(todo)
    for t, result in zip(todo, rendered, strict=True):
        if isinstance(result, Exception):
            outcomes.append(_failed(t.item, f"generation failed: {result}"))
            continue
        audio, sample_rate = result
        if not np.isfinite(audio).all():
            outcomes.append(_failed(t.item, "generated audio is not finite"))
            continue
        out.write(t.keys[0], encode(audio, sample_rate, t.item.row.format))
        sidecar = {**t.record, "audio": t.keys[0], "sample_rate": sample_rate, "seconds": round(seconds, 3)}
        out.write(t.keys[1], (json.dumps(sidecar, indent=1) + "\n").encode())  # the completion marker, last
        outcomes.append({"id": t.id, "line": t.item.line, "status": "generated", "audio": t.keys[0]})
    return outcomes


def _failed(item: JobItem, reason: str) -> dict:
    return {"id": item.row.id, "line": item.line, "status": "failed", "reason": reason}


def finish(job: Job, out_uri: str, outcomes: list[dict], seconds: float) -> dict:
    """Write ``errors.jsonl``, ``manifest.json`` and ``summary.json`` unless the manifest is already current;
    returns the summary."""
    out = open_storage(out_uri)
    errors = sorted(
        [{"line": e["line"], "id": e["id"], "reason": e["reason"]} for e in job.errors]
        + [{"line": o["line"], "id": o["id"], "reason": o["reason"]} for o in outcomes if o["status"] == "failed"],
        key=lambda e: e["line"],
    )
    manifest = {
        "job": job.uri,
        "outputs": {o["id"]: o["audio"] for o in sorted(outcomes, key=lambda o: o["id"]) if "audio" in o},
        "errors": errors,
    }
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
    if current and not counts["generated"]:
        log.info("batch %s: nothing to do (%d outputs current); nothing uploaded", job.uri, len(manifest["outputs"]))
        return {**summary, "uploaded": False}
    out.write(ERRORS, "".join(json.dumps(e) + "\n" for e in errors).encode())
    out.write(SUMMARY, (json.dumps(summary, indent=1) + "\n").encode())
    out.write(MANIFEST, body)  # last: a manifest says the run that wrote it finished
    return {**summary, "uploaded": True}


def run_job(
    job: Job,
    pipeline: str,
    out_uri: str,
    defaults: Defaults | None = None,
    batch_size: int = 8,
    on_batch: Callable[[int, int, list[dict]], None] | None = None,
) -> dict:
    """The whole job in this process, batch after batch (the flow runs the same steps as tasks)."""
    start = time.perf_counter()
    defaults = defaults or Defaults()
    outcomes: list[dict] = []
    batches = plan(job.items, defaults, batch_size)
    for n, batch in enumerate(batches, 1):
        outcomes += run_batch(pipeline, job.storage.uri, out_uri, batch, defaults)
        if on_batch:
            on_batch(n, len(batches), outcomes)
    return finish(job, out_uri, outcomes, time.perf_counter() - start)
