"""Latent codecs: log-mel <-> diffusion latents, behind one interface.

* ``MelPatchCodec`` (embedded default): per-mel-bin normalised log-mel, folded by a lossless space-to-depth
  patchify into (patch*patch, n_mels/patch, frames/patch). Nothing to train, nothing lost.
* ``KLCodec``: a diffusers ``AutoencoderKL`` over the normalised log-mel, either trained by the
  pretrain-vae stage or loaded from a pretrained folder (e.g. AudioLDM's ``vae/``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from seap_model.config import CodecParams


class _NormalisedMel(ModelMixin, ConfigMixin):
    """Shared per-bin normalisation; subclasses add the latent mapping."""

    def _init_norm(self, n_mels: int) -> None:
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))

    @torch.no_grad()
    def fit_normalisation(self, logmels: list[torch.Tensor]) -> None:
        """Set per-bin mean/std from a list of (n_mels, frames) log-mels (the training set)."""
        cat = torch.cat([m.float() for m in logmels], dim=-1)
        self.mel_mean.copy_(cat.mean(-1))
        self.mel_std.copy_(cat.std(-1).clamp_min(1e-3))

    def normalise(self, logmel: torch.Tensor) -> torch.Tensor:
        return (logmel - self.mel_mean[:, None]) / self.mel_std[:, None]

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mel_std[:, None] + self.mel_mean[:, None]

    @property
    def time_axis(self) -> int:
        """Axis of the latent (C, ., .) that runs along time: -1, or -2 for time-major VAEs like AudioLDM's."""
        return -1

    def crop_frames(self, logmel: torch.Tensor) -> torch.Tensor:
        """Drop trailing frames so the frame count is a multiple of ``frame_multiple``."""
        frames = logmel.shape[-1] - logmel.shape[-1] % self.frame_multiple
        if frames == 0:
            raise ValueError(f"need at least {self.frame_multiple} mel frames, got {logmel.shape[-1]}")
        return logmel[..., :frames]


class MelPatchCodec(_NormalisedMel):
    """Lossless space-to-depth patchify of the normalised log-mel (B, n_mels, T) <-> (B, p*p, n_mels/p, T/p)."""

    @register_to_config
    def __init__(self, n_mels: int = 64, patch: int = 4, downsample: int = 4):
        super().__init__()
        if n_mels % (patch * downsample):
            raise ValueError(f"n_mels {n_mels} must be divisible by patch*downsample = {patch * downsample}")
        self._init_norm(n_mels)

    @property
    def latent_channels(self) -> int:
        return self.config.patch**2

    @property
    def frame_multiple(self) -> int:
        """Mel frames per latent step times the U-Net's total downsampling."""
        return self.config.patch * self.config.downsample

    def latent_shape(self, frames: int) -> tuple[int, int, int]:
        p = self.config.patch
        return (p * p, self.config.n_mels // p, frames // p)

    def encode(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.normalise(self.crop_frames(logmel)).unsqueeze(1)
        return F.pixel_unshuffle(x, self.config.patch)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.denormalise(F.pixel_shuffle(latents, self.config.patch).squeeze(1))


class KLCodec(_NormalisedMel):
    """A diffusers AutoencoderKL on the (normalised) log-mel, latents scaled by ``scaling_factor``.

    ``vae_config`` is the AutoencoderKL config (so a pretrained VAE of any size fits); ``small_vae_config`` gives
    the embedded default's. ``time_major`` feeds the VAE (B, 1, frames, n_mels) as AudioLDM's VAE expects;
    its latents then run along time on axis -2.
    """

    @register_to_config
    def __init__(
        self,
        vae_config: dict,
        n_mels: int = 64,
        downsample: int = 4,
        scaling_factor: float = 1.0,
        time_major: bool = False,
    ):
        super().__init__()
        self._init_norm(n_mels)
        self.vae = AutoencoderKL.from_config(vae_config)
        self._vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if n_mels % (self._vae_factor * (1 if time_major else downsample)):
            raise ValueError(f"n_mels {n_mels} does not fit the VAE's and U-Net's downsampling")

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def time_axis(self) -> int:
        return -2 if self.config.time_major else -1

    @property
    def frame_multiple(self) -> int:
        return self._vae_factor * self.config.downsample

    def latent_shape(self, frames: int) -> tuple[int, int, int]:
        f = self._vae_factor
        mel, time = self.config.n_mels // f, frames // f
        return (self.latent_channels, time, mel) if self.config.time_major else (self.latent_channels, mel, time)

    def encode(self, logmel: torch.Tensor, sample: bool = False) -> torch.Tensor:
        x = self.normalise(self.crop_frames(logmel)).unsqueeze(1)
        if self.config.time_major:
            x = x.transpose(-1, -2)
        dist = self.vae.encode(x).latent_dist
        z = dist.sample() if sample else dist.mode()
        return z * self.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode(latents / self.config.scaling_factor).sample
        if self.config.time_major:
            x = x.transpose(-1, -2)
        return self.denormalise(x.squeeze(1))


def small_vae_config(latent_channels: int, block_out_channels: tuple[int, ...]) -> dict:
    """AutoencoderKL config of the small mono log-mel VAE trained by the pretrain-vae stage."""
    levels = len(block_out_channels)
    return dict(
        in_channels=1,
        out_channels=1,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        block_out_channels=list(block_out_channels),
        latent_channels=latent_channels,
        norm_num_groups=min(32, block_out_channels[0] // 2),
        layers_per_block=1,
    )


def make_codec(params: CodecParams, n_mels: int, downsample: int) -> MelPatchCodec | KLCodec:
    """An unfitted codec of the configured type (a pretrained VAE keeps its weights)."""
    if params.type == "patchify":
        return MelPatchCodec(n_mels=n_mels, patch=params.patch, downsample=downsample)
    if params.type == "autoencoder_kl":
        vae_config = small_vae_config(params.latent_channels, tuple(params.block_out_channels))
        return KLCodec(vae_config=vae_config, n_mels=n_mels, downsample=downsample)
    vae = AutoencoderKL.from_pretrained(params.pretrained, subfolder=_subfolder(params.pretrained, "vae"))
    if vae.config.in_channels != 1:
        raise ValueError(
            f"pretrained VAE {params.pretrained}: expected a 1-channel (mel) VAE, got "
            f"in_channels={vae.config.in_channels}"
        )
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    codec = KLCodec(
        vae_config=config,
        n_mels=n_mels,
        downsample=downsample,
        scaling_factor=vae.config.scaling_factor,
        time_major=True,
    )
    codec.vae.load_state_dict(vae.state_dict())
    return codec


def _subfolder(path: str, name: str) -> str | None:
    return name if (Path(path) / name / "config.json").is_file() else None
