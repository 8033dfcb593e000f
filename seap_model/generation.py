"""Generation in memory: per-item seeds, reference checks, one clip, and the render core every batch uses.

``render`` is the one place clips are made in batches: the generate stage and batch jobs
(``seap_model.batch.engine``, which adds files and sidecars) and the evaluation (``seap_model.eval.render``,
in memory) all go through it, so a clip does not depend on who asked for it: each item's noise comes from
``item_generator(seed, id)``, a batch over the device's memory is split in halves until it fits, and a bad item
fails alone.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from seap_model.audio import AudioError, load_audio, save_audio
from seap_model.config import SamplingParams
from seap_model.models.reference import MAX_SECONDS, MIN_SECONDS, check_reference
from seap_model.pipeline import SEAPPipeline
from seap_model.precision import sampling_precision
from seap_model.samplers import sampler_swapped

log = logging.getLogger(__name__)


def item_generator(seed: int, item_id: str) -> torch.Generator:
    """A generator seeded per item, so a clip does not depend on which batch it ran in."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(item_id.encode()))


def load_reference(path: str | Path, sample_rate: int) -> torch.Tensor:
    """A reference clip as mono at ``sample_rate``; AudioError naming the file if it cannot be read, is shorter
    than ``models.reference.MIN_SECONDS`` or longer than its ``MAX_SECONDS`` (from the header: not decoded),
    silent or not finite (the checks the reference encoder makes)."""
    try:
        wave = load_audio(path, sample_rate, min_seconds=MIN_SECONDS, max_seconds=MAX_SECONDS)
    except AudioError as exc:
        raise AudioError(f"reference {exc}") from None
    try:
        check_reference(wave, sample_rate, min_seconds=MIN_SECONDS)
    except AudioError as exc:
        raise AudioError(f"reference {path}: {str(exc).removeprefix('reference 0: ')}") from None
    return wave


def resolved(pipe: SEAPPipeline, sampling: SamplingParams) -> SamplingParams:
    """``sampling`` as it will run on ``pipe``, the way outputs record it: the duration and step count filled in
    (None: the pipeline's own) and ``auto`` precision resolved for the pipeline's device."""
    return sampling.model_copy(
        update={
            "duration": float(pipe.config.duration) if sampling.duration is None else sampling.duration,
            "steps": pipe.default_steps if sampling.steps is None else sampling.steps,
            "precision": sampling_precision(sampling.precision, pipe.device),
        }
    )


def sample(pipe: SEAPPipeline, prompts, references, sampling: SamplingParams, seeds, ids):
    """One pipeline call with every setting of ``sampling``: its sampler swapped in, one generator per clip.
    ``ids``: the per-item generators' ``item_generator(seed, id)``; an id of "" seeds with the plain seed (a
    single clip from ``generate_one``)."""
    generators = [item_generator(s, i) if i else torch.Generator().manual_seed(s) for s, i in zip(seeds, ids)]
    with sampler_swapped(pipe, sampling.scheduler):
        return pipe(
            list(prompts),
            references,
            duration=sampling.duration,
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
    pipe: SEAPPipeline, prompt: str, reference: str | Path | None, out: str | Path, sampling: SamplingParams
) -> Path:
    """Generate one clip from a prompt and a reference file (any sample rate, mono or stereo; None: the
    reference dropped)."""
    if not prompt.strip():
        raise ValueError("prompt is empty")
    ref = load_reference(reference, pipe.sample_rate) if reference is not None else None
    result = sample(pipe, [prompt], [ref] if ref is not None else None, sampling, [sampling.seed], [""])
    save_audio(out, result.audios[0], result.sample_rate)
    return Path(out)


def render(
    pipe: SEAPPipeline,
    ids: Sequence[str],
    prompts: Sequence[str],
    references: Sequence[torch.Tensor] | None,
    sampling: SamplingParams,
    seeds: Sequence[int],
) -> list[np.ndarray | Exception]:
    """A clip (float32, at ``pipe.sample_rate``) or the error for each item: one batched call, and item by item
    if the batch fails, so one bad item cannot take the others down (``references=None``: every reference
    dropped). Each item's noise comes from ``item_generator(seed, id)``, so a clip does not depend on the batch
    it ran in, and a batch over the device's memory is split in halves until it fits. Audio that is not finite
    is that item's FloatingPointError."""
    try:
        result = sample(pipe, prompts, list(references) if references is not None else None, sampling, seeds, ids)
        if len(result.audios) != len(ids):
            raise RuntimeError(f"the pipeline returned {len(result.audios)} clips for {len(ids)} prompts")
        return [_finite(np.asarray(a, dtype=np.float32)) for a in result.audios]
    except torch.OutOfMemoryError as exc:
        # The batch is over the device's memory: halves until it fits (the clips do not change, each has its
        # own generator); one clip that does not fit is that item's failure.
        if len(ids) == 1:
            return [exc]
        if pipe.device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(ids) // 2
        log.warning("generate: out of memory at batch %d; retrying as %d + %d", len(ids), half, len(ids) - half)
        return [
            *render(pipe, ids[:half], prompts[:half], _part(references, 0, half), sampling, seeds[:half]),
            *render(pipe, ids[half:], prompts[half:], _part(references, half, None), sampling, seeds[half:]),
        ]
    except (AudioError, FloatingPointError, ValueError) as exc:
        if len(ids) == 1:
            return [exc]
    return [
        render(pipe, ids[i : i + 1], prompts[i : i + 1], _part(references, i, i + 1), sampling, seeds[i : i + 1])[0]
        for i in range(len(ids))
    ]


def _part(references, start: int, stop: int | None):
    return None if references is None else list(references)[start:stop]


def _finite(audio: np.ndarray) -> np.ndarray | FloatingPointError:
    return audio if np.isfinite(audio).all() else FloatingPointError("generated audio is not finite")
