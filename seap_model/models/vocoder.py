"""Vocoders: log-mel -> waveform, behind one interface (``vocoder(logmel)``: (B, n_mels, frames) -> (B, samples)).

* ``LearnedVocoder`` (embedded default): a small convolutional network, trained by the pretrain-vocoder stage,
  predicts the linear STFT magnitude from the log-mel; Griffin-Lim recovers the phase. docs/vocoder.md has the
  measurements that chose it.
* ``GriffinLimVocoder``: least-squares mel inversion + Griffin-Lim; no weights (pipelines saved before the
  learned vocoder existed use it).
* ``HiFiGANVocoder``: transformers' SpeechT5HifiGan, AudioLDM's ``vocoder/`` layout.

Every vocoder runs in fp32 whatever autocast is active around it, and refuses an empty or non-finite log-mel.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torchaudio
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from seap_model.audio import AudioError, MelSettings
from seap_model.config import VocoderParams


def check_logmel(logmel: torch.Tensor, n_mels: int) -> torch.Tensor:
    """``logmel`` as fp32 (B, n_mels, frames); AudioError for a wrong shape, no frames or NaN/inf values."""
    if logmel.ndim != 3 or logmel.shape[1] != n_mels:
        raise AudioError(f"vocoder input must be (batch, {n_mels} mels, frames), got shape {tuple(logmel.shape)}")
    if logmel.shape[0] == 0 or logmel.shape[2] == 0:
        raise AudioError(f"vocoder input is empty: shape {tuple(logmel.shape)}")
    if not torch.isfinite(logmel).all():
        bad = (~torch.isfinite(logmel)).flatten(1).any(1).nonzero().flatten().tolist()
        raise AudioError(f"vocoder input has NaN/inf values (batch items {bad})")
    return logmel.float()


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) Slaney filterbank, the one ``seap_model.audio.LogMel`` analyses with."""
    return torchaudio.functional.melscale_fbanks(
        n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
    )


class _ResidualBlock(torch.nn.Module):
    """GELU -> dilated conv -> GELU -> 1x1 conv, added to the input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.GELU(),
            torch.nn.Conv1d(
                channels, channels, kernel_size, padding=dilation * (kernel_size - 1) // 2, dilation=dilation
            ),
            torch.nn.GELU(),
            torch.nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GriffinLim(torch.nn.Module):
    """Fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99) from zero phase, differentiable throughout.

    torchaudio's ``GriffinLim`` computes the same iterations but normalises the phase by ``|X|`` clamped at
    1e-16, whose gradient overflows where the spectrum is near zero; training through it (pretrain-vocoder's
    unrolled steps) ends in NaN. Here the normalisation is ``X / sqrt(|X|^2 + eps)``: the forward result is the
    same to float precision and the gradient stays bounded.
    """

    def __init__(self, n_fft: int, hop_length: int, n_iter: int, momentum: float = 0.99, eps: float = 1e-10):
        super().__init__()
        self.n_fft, self.hop_length, self.n_iter, self.momentum, self.eps = n_fft, hop_length, n_iter, momentum, eps
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def _istft(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.istft(spec, self.n_fft, self.hop_length, window=self.window)

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        """(B, n_fft // 2 + 1, frames) linear magnitude -> (B, (frames - 1) * hop_length) waveform."""
        phase = torch.ones_like(magnitude, dtype=torch.complex64)
        previous = torch.zeros_like(phase)
        for _ in range(self.n_iter):
            rebuilt = torch.stft(
                self._istft(magnitude * phase), self.n_fft, self.hop_length, window=self.window, return_complex=True
            )
            accelerated = rebuilt - previous * (self.momentum / (1 + self.momentum))
            phase = accelerated * torch.rsqrt(accelerated.real**2 + accelerated.imag**2 + self.eps)
            previous = rebuilt
        return self._istft(magnitude * phase)


class LearnedVocoder(ModelMixin, ConfigMixin):
    """Log-mel -> linear magnitude (a residual conv net over the least-squares inverse) -> Griffin-Lim.

    The network sees the whole clip along time (dilated convolutions), so it can put back what the mel's
    band averaging and 64 ms window smeared: harmonics inside a band, onsets between frames. Its output
    layer starts at zero, so an untrained model is exactly the least-squares inverse. Written by hand: no
    library ships a mel-to-linear-magnitude network (torchaudio has the inverse and Griffin-Lim it builds on).
    Griffin-Lim starts from zero phase, so the output is a deterministic function of the log-mel.
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
        channels: int = 256,
        layers: int = 8,
        kernel_size: int = 3,
        griffin_lim_iters: int = 8,
        log_floor: float = 1e-5,
    ):
        super().__init__()
        basis = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        self.register_buffer("inverse_basis", torch.linalg.pinv(basis), persistent=False)  # (n_mels, freqs)
        self.register_buffer("mel_mean", torch.zeros(n_mels))  # input normalisation, fitted on the training mels
        self.register_buffer("mel_std", torch.ones(n_mels))
        self.inp = torch.nn.Conv1d(n_mels, channels, kernel_size, padding=(kernel_size - 1) // 2)
        self.blocks = torch.nn.Sequential(*(_ResidualBlock(channels, kernel_size, 2 ** (i % 4)) for i in range(layers)))
        self.out = torch.nn.Conv1d(channels, n_fft // 2 + 1, 1)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)
        self.griffin_lim = GriffinLim(n_fft, hop_length, griffin_lim_iters)

    @torch.no_grad()
    def fit_normalisation(self, logmels: list[torch.Tensor]) -> None:
        """Per-mel-bin mean and std of the training log-mels (each (n_mels, frames))."""
        cat = torch.cat([m.float() for m in logmels], dim=-1)
        self.mel_mean.copy_(cat.mean(-1))
        self.mel_std.copy_(cat.std(-1).clamp_min(1e-3))

    def log_magnitude(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log-mel -> (B, n_fft // 2 + 1, frames) natural-log linear magnitude."""
        floor = math.log(self.config.log_floor)
        base = torch.einsum("mf,bmt->bft", self.inverse_basis, logmel.exp()).clamp_min(self.config.log_floor).log()
        h = self.inp((logmel - self.mel_mean[:, None]) / self.mel_std[:, None])
        # The ceiling (e^8) is above any magnitude a full-scale signal has with this window; it keeps an
        # untrained or diverging network from sending Griffin-Lim infinities.
        return (base + self.out(self.blocks(h))).clamp(floor, 8.0)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log-mel -> (B, (frames - 1) * hop_length) waveform, peak at most 1."""
        logmel = check_logmel(logmel, self.config.n_mels)
        with torch.no_grad(), torch.autocast(logmel.device.type, enabled=False):
            wave = self.griffin_lim(self.log_magnitude(logmel).exp())
        peak = wave.abs().amax(dim=-1, keepdim=True)
        return wave / peak.clamp_min(1.0)  # only a clip that would clip is scaled down


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

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log-mel -> (B, samples) waveform."""
        logmel = check_logmel(logmel, self.config.n_mels)
        with torch.no_grad(), torch.autocast(logmel.device.type, enabled=False):
            magnitude = self.inverse_mel(logmel.exp()).clamp_min(0.0)
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

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log-mel -> (B, samples) waveform."""
        logmel = check_logmel(logmel, self.config.n_mels)
        with torch.no_grad(), torch.autocast(logmel.device.type, enabled=False):
            return self.model(logmel.transpose(1, 2))


def mel_config(mel: MelSettings) -> dict:
    """The vocoder config keys that must agree with the audio settings."""
    return {k: v for k, v in dataclasses.asdict(mel).items() if k != "log_floor"}


def new_learned_vocoder(params: VocoderParams, mel: MelSettings) -> LearnedVocoder:
    """An untrained learned vocoder for these audio settings (what pretrain-vocoder trains)."""
    return LearnedVocoder(
        **mel_config(mel),
        channels=params.channels,
        layers=params.layers,
        griffin_lim_iters=params.griffin_lim_iters,
        log_floor=mel.log_floor,
    )


def make_vocoder(params: VocoderParams, mel: MelSettings) -> ModelMixin:
    """The pipeline's vocoder: the learned one from ``params.out_dir``, Griffin-Lim (no weights), or a HiFi-GAN
    from an AudioLDM-layout folder (``vocoder/``) or hub id."""
    settings = mel_config(mel)
    if params.type == "griffin_lim":
        return GriffinLimVocoder(**settings, n_iter=params.griffin_lim_iters)
    if params.type == "learned":
        folder = Path(params.out_dir)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no learned vocoder here; run `seap pretrain-vocoder` first")
        vocoder = LearnedVocoder.from_pretrained(folder)
        saved = {k: vocoder.config[k] for k in settings}
        if saved != settings:
            raise ValueError(f"{folder}: vocoder was trained for audio settings {saved}, params.yaml has {settings}")
        vocoder.griffin_lim.n_iter = params.griffin_lim_iters
        vocoder.register_to_config(griffin_lim_iters=params.griffin_lim_iters)
        return vocoder.eval()
    from transformers import SpeechT5HifiGan

    layout = {"subfolder": "vocoder"} if (Path(params.pretrained) / "vocoder" / "config.json").is_file() else {}
    source = SpeechT5HifiGan.from_pretrained(params.pretrained, **layout)
    vocoder = HiFiGANVocoder(hifigan_config=source.config.to_dict(), **settings)
    vocoder.model.load_state_dict(source.state_dict())
    return vocoder.eval()
