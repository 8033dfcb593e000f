"""What a usable reference clip is: finite, long enough, not silent; the checks every reference encoder runs."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from seap_model.audio import AudioError, rms_db

MIN_SECONDS = 0.5
MAX_SECONDS = 60.0  # a longer reference file is refused from its header, before it is decoded
SILENCE_DB = -80.0


def check_reference(
    wave: Tensor, sample_rate: int, *, min_seconds: float = MIN_SECONDS, silence_db: float = SILENCE_DB
) -> None:
    """Raise AudioError unless ``wave`` ([B, samples] or [samples]) is finite, long enough and not silent."""
    if wave.ndim not in (1, 2):
        raise AudioError(f"reference must be [batch, samples] or [samples], got shape {tuple(wave.shape)}")
    batch = wave.reshape(-1, wave.shape[-1])
    seconds = batch.shape[-1] / sample_rate
    if seconds < min_seconds:
        raise AudioError(
            f"reference is {seconds:.2f} s long, at least {min_seconds:.2f} s is needed"
            " (encoder.pad_short: true repeats a short reference up to that length)"
        )
    for i, clip in enumerate(batch):
        if not torch.isfinite(clip).all():
            raise AudioError(f"reference {i}: contains NaN or infinite samples")
        level = rms_db(clip)
        if level < silence_db:
            raise AudioError(f"reference {i}: silent (RMS {level:.1f} dBFS is below {silence_db:.0f} dBFS)")


def pad_reference(wave: Tensor, sample_rate: int, min_seconds: float) -> Tensor:
    """Repeat a reference shorter than ``min_seconds`` end to end up to that length (longer ones unchanged).

    Repeating, unlike zero-padding, keeps the clip's level and spectral statistics, which are what
    the per-clip normalisation and the statistics pooling see."""
    need, n = math.ceil(min_seconds * sample_rate), wave.shape[-1]
    if n == 0 or n >= need:
        return wave
    return wave.repeat(*([1] * (wave.ndim - 1)), -(-need // n))[..., :need]


def prepare_reference(wave: Tensor, config, validate: bool = True) -> Tensor:
    """Pad (``config.pad_short``) and check a reference batch the way every reference encoder does."""
    if config.pad_short:
        wave = pad_reference(wave, config.sample_rate, config.min_seconds)
    if validate:
        check_reference(wave, config.sample_rate, min_seconds=config.min_seconds)
    return wave
