"""Audio I/O and features: the one place that knows the sample rate and the mel settings.

Reading goes through soundfile (torchaudio.load needs FFmpeg/torchcodec, which are not
installed here); resampling and mel transforms come from torchaudio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from seap_model.errors import SeapError


class AudioError(SeapError, ValueError):
    """An audio file or waveform that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class MelSettings:
    """Log-mel analysis settings shared by every model that reads audio."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5

    def frames(self, seconds: float) -> int:
        """Number of mel frames covering ``seconds`` of audio (centred STFT)."""
        return int(round(seconds * self.sample_rate)) // self.hop_length + 1


def load_audio(
    path: str | Path, sample_rate: int, *, min_seconds: float = 0.0, max_seconds: float | None = None
) -> torch.Tensor:
    """Read any soundfile-readable file as a mono float32 tensor at ``sample_rate``.

    Raises AudioError (naming the file) for unreadable, empty, non-finite or too short audio, and for a file
    longer than ``max_seconds`` by its header, before decoding it (an hour at 192 kHz is gigabytes as floats).
    """
    path = Path(path)
    if max_seconds is not None:
        _check_length(path, max_seconds)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise AudioError(f"{path}: cannot read audio ({exc.__class__.__name__}: {exc})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    wave = torch.from_numpy(data.mean(axis=1))
    wave = resample(wave, sr, sample_rate)
    seconds = wave.numel() / sample_rate
    if seconds < min_seconds:
        raise AudioError(f"{path}: audio is {seconds:.2f} s long, at least {min_seconds:.2f} s is needed")
    return wave


def _check_length(path: Path, max_seconds: float) -> None:
    try:
        info = sf.info(str(path))
    except Exception:  # not readable: the read that follows names the problem
        return
    seconds = info.frames / info.samplerate if info.samplerate > 0 else 0.0
    if seconds > max_seconds:
        raise AudioError(f"{path}: audio is {seconds:.1f} s long, at most {max_seconds:.0f} s is accepted")


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    if orig_sr == new_sr:
        return wave
    if orig_sr <= 0 or new_sr <= 0:
        raise AudioError(f"invalid sample rate {orig_sr} -> {new_sr}")
    return torchaudio.functional.resample(wave, orig_sr, new_sr)


def save_audio(path: str | Path, wave: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write a mono waveform as 16-bit PCM WAV, atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wave.detach().float().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    data = np.clip(data.reshape(-1), -1.0, 1.0)
    tmp = path.with_name(path.name + ".part")
    sf.write(str(tmp), data, sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)


def rms_db(wave: torch.Tensor) -> float:
    """Root-mean-square level in dBFS (-inf for digital silence)."""
    rms = float(wave.float().pow(2).mean().sqrt()) if wave.numel() else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else float("-inf")


def fit_length(wave: torch.Tensor, samples: int) -> torch.Tensor:
    """Crop or zero-pad the last dimension to exactly ``samples``."""
    n = wave.shape[-1]
    if n >= samples:
        return wave[..., :samples]
    return torch.nn.functional.pad(wave, (0, samples - n))


class LogMel(torch.nn.Module):
    """Waveform (..., samples) -> natural-log mel spectrogram (..., n_mels, frames)."""

    def __init__(self, settings: MelSettings):
        super().__init__()
        self.settings = settings
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=settings.sample_rate,
            n_fft=settings.n_fft,
            hop_length=settings.hop_length,
            n_mels=settings.n_mels,
            f_min=settings.f_min,
            f_max=settings.f_max,
            power=1.0,
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(wave.float()).clamp_min(self.settings.log_floor))
