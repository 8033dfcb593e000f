"""Vocoders: log-mel -> waveform. Griffin-Lim for the embedded default (no weights exist here)."""

from __future__ import annotations

import torch
import torchaudio
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config


class GriffinLimVocoder(ModelMixin, ConfigMixin):
    """Invert a natural-log magnitude mel spectrogram with least-squares mel inversion + Griffin-Lim.

    Phase starts at zero (``rand_init=False``) so the output is deterministic.
    """

    @register_to_config
    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float = 8000.0,
        n_iter: int = 32,
    ):
        super().__init__()
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=n_fft // 2 + 1,
            n_mels=n_mels,
            sample_rate=sample_rate,
            f_min=f_min,
            f_max=f_max,
            norm="slaney",
            mel_scale="slaney",
        )
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=n_fft, hop_length=hop_length, power=1.0, n_iter=n_iter, rand_init=False
        )

    @torch.no_grad()
    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log-mel -> (B, samples) waveform."""
        magnitude = self.inverse_mel(logmel.float().exp()).clamp_min(0.0)
        return self.griffin_lim(magnitude)
