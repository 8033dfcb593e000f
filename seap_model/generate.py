"""The generate stage (batch generation for a prompts file or the test split) and single-clip generation.

Batch generation skips items whose WAV already exists, so an interrupted or partly failed run is completed
by running it again; bad items (unreadable or too short reference, empty prompt, non-finite output) are
reported in ``failures.jsonl`` and the rest still finish.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from pathlib import Path

import torch
from tqdm import tqdm

from seap_model.audio import AudioError, load_audio, save_audio
from seap_model.config import Params, SamplingParams
from seap_model.items import Item, prompt_file_items, split_items
from seap_model.pipeline import SEAPPipeline

log = logging.getLogger(__name__)
MIN_REFERENCE_SECONDS = 0.5
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def item_generator(seed: int, item_id: str) -> torch.Generator:
    """A generator seeded per item, so a clip does not depend on which batch it ran in."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(item_id.encode()))


def load_reference(path: str | Path, sample_rate: int) -> torch.Tensor:
    """A reference clip as mono at ``sample_rate``; AudioError (saying it is the reference) if unusable."""
    try:
        return load_audio(path, sample_rate, min_seconds=MIN_REFERENCE_SECONDS)
    except AudioError as exc:
        raise AudioError(f"reference {exc}") from None


def generate_one(
    pipe: SEAPPipeline, prompt: str, reference: str | Path, out: str | Path, sampling: SamplingParams, duration: float
) -> Path:
    """Generate one clip from a prompt and a reference file (any sample rate, mono or stereo)."""
    if not prompt.strip():
        raise ValueError("prompt is empty")
    ref = load_reference(reference, pipe.sample_rate)
    result = pipe(
        prompt,
        ref,
        duration=duration,
        num_inference_steps=sampling.steps,
        guidance_scale=sampling.guidance,
        generator=torch.Generator().manual_seed(sampling.seed),
    )
    save_audio(out, result.audios[0], result.sample_rate)
    return Path(out)


def run_batch(
    pipe: SEAPPipeline, items: list[Item], out_dir: Path, sampling: SamplingParams, duration: float, batch_size: int = 8
) -> tuple[list[dict], list[dict], int]:
    """Generate every item whose WAV is missing. Returns (done rows, failures, skipped-as-existing)."""
    done, failures, todo, skipped = [], [], [], 0
    for item in items:
        wav = out_dir / f"{item.id}.wav"
        if not _SAFE_ID.match(item.id):
            failures.append({"item": item.id, "reason": "id must use only letters, digits, '.', '_' and '-'"})
        elif wav.exists():
            skipped += 1
            done.append(_row(item, wav))
        elif not item.prompt.strip():
            failures.append({"item": item.id, "reason": "prompt is empty"})
        else:
            try:
                todo.append((item, load_reference(item.reference, pipe.sample_rate)))
            except AudioError as exc:
                failures.append({"item": item.id, "reason": str(exc)})
    for start in tqdm(range(0, len(todo), batch_size), desc="generate", unit="batch"):
        chunk = todo[start : start + batch_size]
        result = pipe(
            [it.prompt for it, _ in chunk],
            [r for _, r in chunk],
            duration=duration,
            num_inference_steps=sampling.steps,
            guidance_scale=sampling.guidance,
            generator=[item_generator(sampling.seed, it.id) for it, _ in chunk],
            progress=False,
        )
        for (item, _), audio in zip(chunk, result.audios):
            if not torch.isfinite(torch.from_numpy(audio)).all():
                failures.append({"item": item.id, "reason": "generated audio is not finite"})
                continue
            wav = out_dir / f"{item.id}.wav"
            save_audio(wav, audio, result.sample_rate)
            done.append(_row(item, wav))
    return done, failures, skipped


def _row(item: Item, wav: Path) -> dict:
    return {
        "id": item.id,
        "prompt": item.prompt,
        "reference": str(item.reference),
        "label": item.label,
        "audio": wav.name,
    }


def generate_batch(params: Params) -> dict:
    """The generate stage: WAVs for every item of ``generate.prompts`` (default: the test split)."""
    gp = params.generate
    out_dir = Path(gp.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[dict] = []
    if gp.prompts:
        items, failures = prompt_file_items(gp.prompts)
    else:
        items = split_items(params.data.serst_dir, "test", gp.max_items)
    pipe = SEAPPipeline.from_pretrained(params.finetune.out_dir)
    pipe.set_progress_bar_config(disable=True)
    done, failed, skipped = run_batch(pipe, items, out_dir, gp.sampling, params.finetune.train_seconds, gp.batch_size)
    malformed = len(failures)
    failures += failed
    with open(out_dir / "index.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in sorted(done, key=lambda r: r["id"]))
    with open(out_dir / "failures.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in failures)
    report = {
        "items": len(items) + malformed,
        "generated": len(done) - skipped,
        "already_there": skipped,
        "failed": len(failures),
    }
    for fail in failures:
        log.warning("skipped %s: %s", fail["item"], fail["reason"])
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report
