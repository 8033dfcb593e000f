"""The batch engine: clips for many requests into a storage location, each with a sidecar that says what made it.

One engine for every batch of files: the generate stage (``seap_model.batch.items``: the test split or a
prompts file into a local folder) and batch jobs (``seap_model.batch.jobs``, run by ``flows/batch_generate.py``
on local disk or S3). The clips come from the render core (``seap_model.generation.render``), which the
evaluation also uses, in memory.

* ``plan`` groups requests that can share a U-Net call (the same sampling settings but the seed, which each
  item's own generator takes) and sorts each group by id before cutting it into batches, so the batches, and
  with them every clip's bytes, do not depend on the order of the requests (nor on which worker runs which).
* ``run_batch`` reads each request's reference, derives its output key from the id and a hash of everything
  that makes the clip (prompt, reference bytes, every sampling setting, format, model and generation code:
  ``provenance``, passed in by the caller), skips requests whose output is complete, and generates the rest
  together. It writes ``<id>-<hash16>.<format>``, then its sidecar ``<id>-<hash16>.json`` (the prompt, the
  reference and its sha256, the settings, the hashes, timings): the sidecar is the completion marker, and an
  object is visible only once written whole (``storage``). A bad request (unsafe id, empty prompt, a missing
  reference or one that leads out of its storage through a symbolic link, an unreadable, short or silent
  reference, a failed or non-finite generation) fails alone, with its reason; transient storage errors are
  raised, for the caller to retry.
* ``prune`` removes every output of an item but its current one, so what is in the folder is what the last
  run made (an output of other inputs could never pass for a current one anyway: its name holds their hash).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from seap_model.audio import AudioError
from seap_model.batch.storage import MissingObject, Storage, UnsafeKey
from seap_model.config import SamplingParams
from seap_model.generation import load_reference, render, resolved
from seap_model.hashing import path_digest
from seap_model.pipeline import SEAPPipeline
from seap_model.progress import progress

log = logging.getLogger(__name__)
ITEM_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_OUTPUT = r"-[0-9a-f]{16}\.(json|wav|flac)"


@dataclass(frozen=True)
class Request:
    """One clip to make: ``reference`` is a key of the source storage, ``sampling`` every setting (seed too)."""

    id: str
    prompt: str
    reference: str
    sampling: SamplingParams
    format: str = "wav"


def plan(requests: list[Request], batch_size: int) -> list[list[Request]]:
    """Batches of at most ``batch_size`` requests sharing their settings, independent of the requests' order."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    groups: dict[tuple, list[Request]] = {}
    for request in requests:
        groups.setdefault(tuple(request.sampling.model_dump(exclude={"seed"}).items()), []).append(request)
    batches = []
    for key in sorted(groups, key=repr):
        rows = sorted(groups[key], key=lambda r: r.id)
        batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    return batches


def open_pipeline(path: str | Path) -> tuple[SEAPPipeline, str]:
    """The saved pipeline at ``path`` and its content hash (what its outputs record as ``model_sha256``)."""
    model_hash = path_digest(path)
    if model_hash is None:
        raise FileNotFoundError(f"{path}: no saved pipeline (run `seap finetune`)")
    pipe = SEAPPipeline.from_pretrained(str(path))
    pipe.set_progress_bar_config(disable=True)
    return pipe, model_hash


def inputs_digest(request: Request, reference_sha256: str, sampling: SamplingParams, provenance: dict) -> str:
    what = {
        "prompt": request.prompt,
        "reference_sha256": reference_sha256,
        "format": request.format,
        "sampling": sampling.model_dump(mode="json"),
        **provenance,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def output_keys(item_id: str, digest: str, fmt: str) -> tuple[str, str]:
    """(audio, sidecar) keys of an item's output: ``<id>-<hash16>.<fmt>`` and ``<id>-<hash16>.json``."""
    stem = f"{item_id}-{digest[:16]}"
    return f"{stem}.{fmt}", f"{stem}.json"


def is_done(out: Storage, keys: tuple[str, str], digest: str) -> bool:
    """True when the sidecar (the completion marker) records ``digest`` and the audio is there."""
    try:
        recorded = json.loads(out.read(keys[1]).decode("utf-8"))
    except (MissingObject, ValueError):  # absent, not UTF-8, not JSON: not done
        return False
    return isinstance(recorded, dict) and recorded.get("inputs_sha256") == digest and out.exists(keys[0])


def encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    data = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    sf.write(buf, data, sample_rate, subtype="PCM_16", format=fmt.upper())
    return buf.getvalue()


@dataclass
class _Todo:
    request: Request
    record: dict
    keys: tuple[str, str]


def _check(request: Request) -> str | None:
    if not ITEM_ID.match(request.id):
        return "id must use only letters, digits, '.', '_' and '-'"
    if not request.prompt.strip():
        return "prompt is empty"
    return None


def run_batch(pipe: SEAPPipeline, provenance: dict, source, out: Storage, batch: list[Request]) -> list[dict]:
    """Generate one batch (requests sharing their settings); one outcome per request: ``generated``, ``skipped``
    (its output is complete) with its ``audio`` key, or ``failed`` with the ``reason``. ``source`` reads the
    references (``read(key)``, ``where(key)``); ``provenance``: the model's and the code's hashes."""
    outcomes, todo, refs = [], [], []
    with tempfile.TemporaryDirectory(prefix="seap-refs-") as tmp:
        for request in batch:
            problem = _check(request)
            if problem:
                outcomes.append(_failed(request, problem))
                continue
            try:
                data = source.read(request.reference)
            except (MissingObject, UnsafeKey) as exc:
                outcomes.append(_failed(request, f"reference {exc}"))
                continue
            sha = hashlib.sha256(data).hexdigest()
            sampling = resolved(pipe, request.sampling)
            digest = inputs_digest(request, sha, sampling, provenance)
            keys = output_keys(request.id, digest, request.format)
            if is_done(out, keys, digest):
                outcomes.append({"id": request.id, "status": "skipped", "audio": keys[0]})
                continue
            path = Path(tmp) / f"{len(refs)}-{Path(request.reference).name}"
            path.write_bytes(data)
            where = source.where(request.reference)
            try:
                refs.append(load_reference(path, pipe.sample_rate))
            except AudioError as exc:
                outcomes.append(_failed(request, str(exc).replace(str(path), where)))
                continue
            record = {
                "id": request.id,
                "prompt": request.prompt,
                "reference": where,
                "reference_sha256": sha,
                "format": request.format,
                "sampling": sampling.model_dump(mode="json"),
                **provenance,
                "inputs_sha256": digest,
            }
            todo.append(_Todo(request, record, keys))
    if not todo:
        return outcomes
    start = time.perf_counter()
    rendered = render(
        pipe,
        [t.request.id for t in todo],
        [t.request.prompt for t in todo],
        refs,
        resolved(pipe, todo[0].request.sampling),
        [t.request.sampling.seed for t in todo],
    )
    seconds = (time.perf_counter() - start) / len(todo)
    for t, audio in zip(todo, rendered, strict=True):
        if isinstance(audio, Exception):
            outcomes.append(_failed(t.request, f"generation failed: {audio}"))
            continue
        out.write(t.keys[0], encode(audio, pipe.sample_rate, t.request.format))
        sidecar = {**t.record, "audio": t.keys[0], "sample_rate": pipe.sample_rate, "seconds": round(seconds, 3)}
        out.write(t.keys[1], (json.dumps(sidecar, indent=1) + "\n").encode())  # the completion marker, last
        outcomes.append({"id": t.request.id, "status": "generated", "audio": t.keys[0]})
    return outcomes


def _failed(request: Request, reason: str) -> dict:
    return {"id": request.id, "status": "failed", "reason": reason}


def prune(out: Storage, current: dict[str, str | None]) -> list[str]:
    """Remove every output (audio, sidecar) of the items in ``current`` (id -> its current audio key, None for
    an item that failed) but the current one; returns the keys removed. Sidecars go first, so an interrupted
    prune never leaves a marker without its audio."""
    if not current:
        return []
    owner = re.compile(f"^({'|'.join(re.escape(i) for i in current)}){_OUTPUT}$")
    keep = {k for audio in current.values() if audio for k in (audio, audio.rsplit(".", 1)[0] + ".json")}
    stale = []
    for key in out.list():
        match = owner.match(key)
        if match and key not in keep:
            stale.append(key)
    for key in sorted(stale, key=lambda k: not k.endswith(".json")):
        out.delete(key)
    return stale


def run(
    pipe: SEAPPipeline,
    provenance: dict,
    source,
    out: Storage,
    requests: list[Request],
    batch_size: int,
) -> list[dict]:
    """Every request in this process, batch after batch (the flow runs the same batches as tasks)."""
    outcomes: list[dict] = []
    batches = plan(requests, batch_size)
    for n, batch in enumerate(progress(batches, desc="generate", unit="batch"), 1):
        outcomes += run_batch(pipe, provenance, source, out, batch)
        log.info("generate: %d of %d batches done", n, len(batches))
    return outcomes
