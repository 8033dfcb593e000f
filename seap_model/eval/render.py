"""Audio for an evaluation: generated clips in batches (paired per-item seeds), the real targets, references.

Every system renders an item with the generator ``item_generator(seed, item.id)``, so two systems (or two
references) differ only in what they are given, never in their noise. Each batch logs one line, so a person
following the log of a long evaluation sees where it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from seap_model.audio import LogMel, fit_length, load_audio
from seap_model.config import SamplingParams
from seap_model.errors import SeapError
from seap_model.generation import load_reference
from seap_model.generation import render as render_clips
from seap_model.pipeline import SEAPPipeline
from seap_model.progress import progress

log = logging.getLogger(__name__)


class RenderError(SeapError, RuntimeError):
    """An evaluation clip could not be made: every system must render every item for the scores to compare."""


def render(
    pipe: SEAPPipeline,
    ids: Sequence[str],
    prompts: Sequence[str],
    references: Sequence[torch.Tensor] | None,
    seed: int,
    sampling: SamplingParams,
    batch_size: int,
    what: str,
) -> list[np.ndarray]:
    """One clip per item (``references=None``: the reference dropped), ``batch_size`` at a time, through the
    render core batch generation uses (``seed``: every item's, over ``sampling.seed``)."""
    out: list[np.ndarray] = []
    start = time.perf_counter()
    batches = range(0, len(ids), batch_size)
    for n, first in enumerate(progress(batches, desc=what, unit="batch"), start=1):
        chunk = slice(first, first + batch_size)
        refs = list(references[chunk]) if references is not None else None
        ids_here = list(ids[chunk])
        clips = render_clips(pipe, ids_here, list(prompts[chunk]), refs, sampling, [seed] * len(ids_here))
        for item, clip in zip(ids_here, clips, strict=True):
            if isinstance(clip, Exception):
                raise RenderError(f"evaluate {what}: item {item}: {clip}") from clip
        out += clips
        if n == len(batches) or n % 5 == 0:
            log.info("evaluate %s: %d/%d clips (%.0f s)", what, len(out), len(ids), time.perf_counter() - start)
    return out


def real_clip(scene_audio: Path, start: float, sample_rate: int, seconds: float) -> np.ndarray:
    """The target scene from just before the item's event, as long as the generated clips."""
    wave = load_audio(scene_audio, sample_rate)
    return fit_length(wave[int(start * sample_rate) :], int(round(seconds * sample_rate))).numpy()


class References:
    """Reference clips loaded once each (checked the way generation checks them), by path."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self._clips: dict[Path, torch.Tensor] = {}

    def __call__(self, path: Path, seconds: float | None = None) -> torch.Tensor:
        if path not in self._clips:
            self._clips[path] = load_reference(path, self.sample_rate)
        wave = self._clips[path]
        return wave if seconds is None else wave[: int(round(seconds * self.sample_rate))]


@torch.no_grad()
def through_codec(pipe: SEAPPipeline, waves: Sequence[np.ndarray], logmel: LogMel, batch: int) -> list[np.ndarray]:
    """Real clips encoded and decoded by the codec and vocoded: the ceiling the generator can reach."""
    out = []
    for first in range(0, len(waves), batch):
        mels = logmel(torch.as_tensor(np.stack(waves[first : first + batch])))
        out += list(pipe.vocoder(pipe.codec.decode(pipe.codec.encode(mels))).numpy())
    return out


@torch.no_grad()
def log_mels(waves: Sequence[np.ndarray], logmel: LogMel) -> np.ndarray:
    """Log-mel spectrograms [N, mels, frames] of equal-length clips."""
    return logmel(torch.as_tensor(np.stack(waves))).numpy()
