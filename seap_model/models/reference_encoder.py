"""H/ASP reference encoder: SE-ResNet-34 layout over log-mels + attentive statistics pooling.

Follows the clova speaker-verification H/ASP model (Heo et al. 2020): 2-D SE-ResNet with the
[3, 4, 6, 3] basic-block layout, three stride-2 stages, attentive statistics pooling over time,
then FC -> FC and L2 normalisation. Saved and loaded with diffusers' save_pretrained/from_pretrained.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from seap_model.audio import LogMel, MelSettings
from seap_model.models.reference import MIN_SECONDS, prepare_reference

ATTENTION_DIM = 128


class SEBasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with squeeze-excitation before the residual sum."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, reduction: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        hidden = max(out_ch // reduction, 4)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(out_ch, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_ch, 1),
            nn.Sigmoid(),
        )
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out * self.se(out) + self.shortcut(x))


class AttentiveStatsPool(nn.Module):
    """Per-frame, per-channel softmax attention over time; returns [weighted mean, weighted std]."""

    def __init__(self, dim: int, hidden: int = ATTENTION_DIM):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv1d(dim, hidden, 1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Conv1d(hidden, dim, 1),
        )

    def forward(self, frames: Tensor) -> Tensor:  # frames: [B, T, C]
        x = frames.transpose(1, 2)
        w = torch.softmax(self.attention(x), dim=2)
        mu = (x * w).sum(dim=2)
        sigma = ((x * x * w).sum(dim=2) - mu * mu).clamp_min(1e-5).sqrt()
        return torch.cat([mu, sigma], dim=1)


class ReferenceEncoder(ModelMixin, ConfigMixin):
    """Waveform [B, samples] -> unit-norm style embedding [B, embedding_dim]."""

    @register_to_config
    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float = 8000.0,
        channels: tuple[int, ...] = (16, 32, 64, 128),
        layers: tuple[int, ...] = (3, 4, 6, 3),
        embedding_dim: int = 128,
        min_seconds: float = MIN_SECONDS,
        pad_short: bool = False,
    ):
        super().__init__()
        if len(channels) != len(layers):
            raise ValueError(f"channels {tuple(channels)} and layers {tuple(layers)} need the same length")
        mel = MelSettings(sample_rate, n_fft, hop_length, n_mels, f_min, f_max)
        self.logmel = LogMel(mel)
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        in_ch, freq = channels[0], n_mels
        for stage, (ch, n) in enumerate(zip(channels, layers)):
            stride = 1 if stage == 0 else 2
            freq = (freq - 1) // stride + 1
            blocks += [SEBasicBlock(in_ch if i == 0 else ch, ch, stride if i == 0 else 1) for i in range(n)]
            in_ch = ch
        self.blocks = nn.Sequential(*blocks)
        self.frame_dim = channels[-1] * freq
        self.pool = AttentiveStatsPool(self.frame_dim)
        self.head = nn.Sequential(
            nn.Linear(2 * self.frame_dim, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
            nn.ReLU(inplace=True),
            nn.Linear(embedding_dim, embedding_dim),
        )

    def features(self, wave: Tensor) -> Tensor:
        """Log-mel [B, 1, n_mels, T], mean/variance normalised per clip (over mel bins and time)."""
        with torch.autocast(wave.device.type, enabled=False):
            spec = self.logmel(wave.float())
            mean = spec.mean(dim=(1, 2), keepdim=True)
            std = spec.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
        return ((spec - mean) / std).unsqueeze(1)

    def frames(self, wave: Tensor, validate: bool = True) -> Tensor:
        """Frame sequence before pooling: [B, T', frame_dim] with T' ~ T / 8."""
        return self.frames_from_features(self.features(prepare_reference(wave, self.config, validate)))

    def frames_from_features(self, features: Tensor) -> Tensor:
        x = self.blocks(self.stem(features))
        return x.flatten(1, 2).transpose(1, 2)

    def embed_features(self, features: Tensor) -> Tensor:
        """Normalised log-mels [B, 1, n_mels, T] (from ``features``, possibly augmented) -> unit vectors."""
        z = self.head(self.pool(self.frames_from_features(features)))
        return nn.functional.normalize(z.float(), dim=-1)

    def forward(self, wave: Tensor, validate: bool = True) -> Tensor:
        """Embed whole references [B, samples] as unit vectors [B, embedding_dim].

        A reference shorter than ``min_seconds`` raises AudioError, or is repeated up to that length
        when ``pad_short``; silent or non-finite references raise AudioError (``validate=False`` skips
        the checks for clips already checked)."""
        return self.embed_features(self.features(prepare_reference(wave, self.config, validate)))
