"""Generation from items (prompt, reference): per-item seeds, input checks, and batches whose outputs say what
made them.

Every output ``<id>.wav`` has a sidecar ``<id>.wav.json`` written after it (the completion marker) recording the
prompt, the reference's sha256, the model's and the generation code's content hashes and every sampling
parameter. A batch skips an item only when its sidecar records exactly those; anything else (a retrained
model, an edited sampler, other sampling, another prompt or reference for the same id, a WAV without its
sidecar) is generated again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from seap_model.audio import AudioError, load_audio, save_audio
from seap_model.config import SamplingParams
from seap_model.data.manifest import read_labels, read_manifest
from seap_model.hashing import file_digest
from seap_model.models.reference import check_reference
from seap_model.pipeline import SEAPPipeline
from seap_model.progress import progress
from seap_model.samplers import sampler_swapped

log = logging.getLogger(__name__)
MIN_REFERENCE_SECONDS = 0.5
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def item_generator(seed: int, item_id: str) -> torch.Generator:
    """A generator seeded per item, so a clip does not depend on which batch it ran in."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(item_id.encode()))


def load_reference(path: str | Path, sample_rate: int) -> torch.Tensor:
    """A reference clip as mono at ``sample_rate``; AudioError naming the file if it cannot be read, is shorter
    than ``MIN_REFERENCE_SECONDS``, silent or not finite (the checks the reference encoder makes)."""
    try:
        wave = load_audio(path, sample_rate, min_seconds=MIN_REFERENCE_SECONDS)
    except AudioError as exc:
        raise AudioError(f"reference {exc}") from None
    try:
        check_reference(wave, sample_rate, min_seconds=MIN_REFERENCE_SECONDS)
    except AudioError as exc:
        raise AudioError(f"reference {path}: {str(exc).removeprefix('reference 0: ')}") from None
    return wave


def sample(pipe: SEAPPipeline, prompts, references, sampling, duration: float, seeds, ids):
    """One pipeline call with every setting of ``sampling`` (a ``SamplingParams``, or any object with its
    fields): its sampler swapped in, one generator per clip. ``ids``: the per-item generators'
    ``item_generator(seed, id)``; an id of "" seeds with the plain seed (a single clip from ``generate_one``)."""
    generators = [item_generator(s, i) if i else torch.Generator().manual_seed(s) for s, i in zip(seeds, ids)]
    with sampler_swapped(pipe, sampling.scheduler):
        return pipe(
            list(prompts),
            references,
            duration=duration,
            num_inference_steps=sampling.steps,
            guidance_scale=sampling.guidance,
            text_guidance_scale=sampling.text_guidance,
            style_guidance_scale=sampling.style_guidance,
            generator=generators,
            progress=False,
            precision=sampling.precision,
            vocoder_iterations=sampling.vocoder_iterations,
        )


def generate_one(
    pipe: SEAPPipeline,
    prompt: str,
    reference: str | Path | None,
    out: str | Path,
    sampling: SamplingParams,
    duration: float,
) -> Path:
    """Generate one clip from a prompt and a reference file (any sample rate, mono or stereo; None: the
    reference dropped)."""
    if not prompt.strip():
        raise ValueError("prompt is empty")
    ref = load_reference(reference, pipe.sample_rate) if reference is not None else None
    result = sample(pipe, [prompt], [ref] if ref is not None else None, sampling, duration, [sampling.seed], [""])
    save_audio(out, result.audios[0], result.sample_rate)
    return Path(out)


@dataclass(frozen=True)
class Item:
    """One clip to generate. ``label``/``scene_audio``/``start`` are known only for items from a SERST split."""

    id: str
    prompt: str
    reference: Path
    label: str | None = None
    scene_audio: Path | None = None
    start: float = 0.0


def split_items(serst_dir: str | Path, split: str = "test", max_items: int | None = None) -> list[Item]:
    """One item per (scene, labelled reference): the label's caption as prompt, the reference clip as style."""
    captions = read_labels(serst_dir)
    items: list[Item] = []
    for scene in read_manifest(Path(serst_dir) / f"{split}.jsonl"):
        seen: set[str] = set()
        for ref in scene.references:
            if ref.label in seen:
                continue
            seen.add(ref.label)
            items.append(
                Item(
                    id=f"{scene.id}_{ref.label}",
                    prompt=captions[ref.label],
                    reference=scene.path(ref.audio),
                    label=ref.label,
                    scene_audio=scene.path(scene.audio),
                    start=max(0.0, ref.spans[0][0] - 0.1),
                )
            )
    return items[:max_items] if max_items else items


def prompt_file_items(path: str | Path) -> tuple[list[Item], list[dict]]:
    """Items from a JSONL file of ``{"id", "prompt", "reference"}`` rows (reference relative to the file).

    Malformed rows are returned as failures naming the line, not raised: a batch job skips them.
    """
    path = Path(path)
    items, failures = [], []
    seen: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item_id, prompt, reference = str(row["id"]), row["prompt"], row["reference"]
            if not isinstance(prompt, str) or not isinstance(reference, str):
                raise TypeError("'prompt' and 'reference' must be strings")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            failures.append({"item": f"{path}:{n}", "reason": f"malformed row ({exc.__class__.__name__}: {exc})"})
            continue
        if item_id in seen:
            failures.append({"item": f"{path}:{n}", "reason": f"duplicate id {item_id!r}"})
            continue
        seen.add(item_id)
        items.append(Item(item_id, prompt, path.parent / reference))
    return items, failures


def sidecar_path(out_dir: Path, item_id: str) -> Path:
    """``<id>.wav.json``: named after the output, so no item id can collide with the stage's own files."""
    return out_dir / f"{item_id}.wav.json"


def expected_sidecar(item: Item, provenance: dict, sampling: SamplingParams, duration: float) -> dict:
    """What an item's sidecar must say for its output to count as done: the item (prompt, reference content),
    how it was made (``provenance``: model and code hashes) and every sampling setting. AudioError if the
    reference cannot be read."""
    try:
        reference_sha = file_digest(item.reference)
    except OSError as exc:
        raise AudioError(f"reference {item.reference}: cannot be read ({exc.strerror or exc})") from None
    return {
        "id": item.id,
        "prompt": item.prompt,
        "reference": str(item.reference),
        "reference_sha256": reference_sha,
        **provenance,
        "sampling": sampling.model_dump(mode="json"),
        "duration": duration,
    }


def is_done(out_dir: Path, expected: dict) -> bool:
    """True when ``<id>.wav`` exists and its sidecar records exactly ``expected``."""
    wav, sidecar = out_dir / f"{expected['id']}.wav", sidecar_path(out_dir, expected["id"])
    if not (wav.is_file() and sidecar.is_file()):
        return False
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON: not done
        return False
    return isinstance(recorded, dict) and {k: recorded.get(k) for k in expected} == expected


def discard_output(out_dir: Path, item_id: str) -> None:
    """Remove an item's output and sidecar, so an old result cannot pass for a current one."""
    (out_dir / f"{item_id}.wav").unlink(missing_ok=True)
    sidecar_path(out_dir, item_id).unlink(missing_ok=True)


def write_output(out_dir: Path, audio, sample_rate: int, record: dict) -> Path:
    """The WAV (written under a temporary name, then renamed), then its sidecar: the sidecar is the marker."""
    wav = out_dir / f"{record['id']}.wav"
    tmp = wav.with_name(wav.name + ".partial.wav")
    save_audio(tmp, audio, sample_rate)
    os.replace(tmp, wav)
    sidecar = sidecar_path(out_dir, record["id"])
    sidecar_tmp = sidecar.with_name(sidecar.name + ".partial")
    sidecar_tmp.write_text(json.dumps({**record, "sample_rate": sample_rate}, indent=1) + "\n")
    os.replace(sidecar_tmp, sidecar)
    return wav


def render(pipe: SEAPPipeline, chunk: list, sampling: SamplingParams, duration: float, seed_of=None) -> list:
    """Audio (or the error) for each (item, record, reference) of ``chunk``: one batched call, and item by item
    if the batch fails, so one bad item cannot take the others down. Each item's noise comes from its own
    generator (``item_generator``; seed ``seed_of(item)``, default ``sampling.seed``), so a clip does not depend on
    the batch it ran in, and a batch over the device's memory is split in halves until it fits."""

    def call(part):
        seeds = [seed_of(it) if seed_of else sampling.seed for it, _, _ in part]
        return sample(
            pipe,
            [it.prompt for it, _, _ in part],
            [r for _, _, r in part],
            sampling,
            duration,
            seeds,
            [it.id for it, _, _ in part],
        )

    try:
        result = call(chunk)
        if len(result.audios) != len(chunk):
            raise RuntimeError(f"the pipeline returned {len(result.audios)} clips for {len(chunk)} prompts")
        return [(audio, result.sample_rate) for audio in result.audios]
    except torch.OutOfMemoryError as exc:
        # The batch is over the device's memory: halves until it fits (the clips do not change, each has its
        # own generator); one clip that does not fit is that item's failure.
        if len(chunk) == 1:
            return [exc]
        _free_device_cache(pipe)
        half = len(chunk) // 2
        log.warning("generate: out of memory at batch %d; retrying as %d + %d", len(chunk), half, len(chunk) - half)
        return render(pipe, chunk[:half], sampling, duration, seed_of) + render(
            pipe, chunk[half:], sampling, duration, seed_of
        )
    except (AudioError, FloatingPointError, ValueError) as exc:
        if len(chunk) == 1:
            return [exc]
    return [render(pipe, [entry], sampling, duration, seed_of)[0] for entry in chunk]


def _free_device_cache(pipe: SEAPPipeline) -> None:
    if pipe.device.type == "cuda":
        torch.cuda.empty_cache()


def run_batch(
    pipe: SEAPPipeline,
    items: list[Item],
    out_dir: Path,
    sampling: SamplingParams,
    duration: float,
    provenance: dict,
    batch_size: int = 8,
) -> tuple[list[dict], list[dict], int]:
    """Generate every item not already done with this provenance (model and code hashes) and these settings.

    Returns (done rows, failures, skipped as already done). A bad item (unsafe id, empty prompt, unreadable,
    short or silent reference, a failed or non-finite generation) becomes a failure with its reason, its old
    output is removed, and the others still finish.
    """
    done, failures, todo, skipped = [], [], [], 0
    for item in items:
        if not _SAFE_ID.match(item.id):
            failures.append({"item": item.id, "reason": "id must use only letters, digits, '.', '_' and '-'"})
            continue
        if not item.prompt.strip():
            failures.append({"item": item.id, "reason": "prompt is empty"})
            discard_output(out_dir, item.id)
            continue
        try:
            record = expected_sidecar(item, provenance, sampling, duration)
            if is_done(out_dir, record):
                skipped += 1
                done.append(_row(item, out_dir / f"{item.id}.wav"))
                continue
            todo.append((item, record, load_reference(item.reference, pipe.sample_rate)))
        except AudioError as exc:
            failures.append({"item": item.id, "reason": str(exc)})
            discard_output(out_dir, item.id)
    for start in progress(range(0, len(todo), batch_size), desc="generate", unit="batch"):
        chunk = todo[start : start + batch_size]
        for (item, record, _), outcome in zip(chunk, render(pipe, chunk, sampling, duration), strict=True):
            if isinstance(outcome, Exception):
                failures.append({"item": item.id, "reason": f"generation failed: {outcome}"})
                discard_output(out_dir, item.id)
            elif not torch.isfinite(torch.from_numpy(outcome[0])).all():
                failures.append({"item": item.id, "reason": "generated audio is not finite"})
                discard_output(out_dir, item.id)
            else:
                done.append(_row(item, write_output(out_dir, outcome[0], outcome[1], record)))
        log.info("generate: %d of %d items done", min(start + batch_size, len(todo)), len(todo))
    return done, failures, skipped


def _row(item: Item, wav: Path) -> dict:
    return {
        "id": item.id,
        "prompt": item.prompt,
        "reference": str(item.reference),
        "label": item.label,
        "audio": wav.name,
    }
