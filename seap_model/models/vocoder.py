"""Vocoders: log-mel -> waveform. Griffin-Lim for the embedded default (no weights exist here)."""

from __future__ import annotations

import dataclasses
import math

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


HIFIGAN_KEYS = (
    "model_in_dim",
    "sampling_rate",
    "upsample_initial_channel",
    "upsample_rates",
    "upsample_kernel_sizes",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "leaky_relu_slope",
    "normalize_before",
)


class HiFiGANVocoder(ModelMixin, ConfigMixin):
    """HiFi-GAN (transformers' SpeechT5HifiGan, as in AudioLDM's ``vocoder/``) behind the vocoder interface."""

    @register_to_config
    def __init__(
        self,
        hifigan_config: dict,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float = 8000.0,
    ):
        super().__init__()
        from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

        config = SpeechT5HifiGanConfig(**{k: hifigan_config[k] for k in HIFIGAN_KEYS if k in hifigan_config})
        problems = []
        if config.model_in_dim != n_mels:
            problems.append(f"model_in_dim {config.model_in_dim} != n_mels {n_mels}")
        if config.sampling_rate != sample_rate:
            problems.append(f"sampling_rate {config.sampling_rate} != sample_rate {sample_rate}")
        if math.prod(config.upsample_rates) != hop_length:
            problems.append(f"upsampling x{math.prod(config.upsample_rates)} != hop_length {hop_length}")
        if problems:
            raise ValueError("HiFi-GAN vocoder does not fit the audio settings: " + "; ".join(problems))
        self.model = SpeechT5HifiGan(config)

    @torch.no_grad()
    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log-mel -> (B, samples) waveform."""
        return self.model(logmel.float().transpose(1, 2))


def make_vocoder(kind: str, pretrained: str | None, mel, griffin_lim_iters: int = 32) -> ModelMixin:
    """Griffin-Lim (no weights), or a HiFi-GAN from an AudioLDM-layout folder (``vocoder/``) or hub id."""
    settings = {k: v for k, v in dataclasses.asdict(mel).items() if k != "log_floor"}
    if kind == "griffin_lim":
        return GriffinLimVocoder(**settings, n_iter=griffin_lim_iters)
    from pathlib import Path

    from transformers import SpeechT5HifiGan

    layout = {"subfolder": "vocoder"} if (Path(pretrained) / "vocoder" / "config.json").is_file() else {}
    source = SpeechT5HifiGan.from_pretrained(pretrained, **layout)
    vocoder = HiFiGANVocoder(hifigan_config=source.config.to_dict(), **settings)
    vocoder.model.load_state_dict(source.state_dict())
    return vocoder.eval()
