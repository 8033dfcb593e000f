"""Decoupled reference cross-attention (``finetune.style: decoupled``), the IP-Adapter form for audio references.

Every cross-attention layer of the U-Net gets a second key/value projection for reference tokens; its attention
output is added to the text attention's. The reference becomes tokens through diffusers' ``ImageProjection``
(a pooled embedding -> ``num_tokens`` tokens; with ``reference="frames"``, each encoder frame -> one token).
The attention itself is diffusers' ``IPAdapterAttnProcessor2_0``, fed ``(text tokens, [reference tokens])``.

The weights live in this component (its own folder in a saved pipeline), not in the U-Net: ``attached(unet)``
installs the processors for as long as sampling needs them (training attaches them for the whole run, since
gradient checkpointing recomputes the forward pass during backward), so the U-Net saves and loads as a plain
``UNet2DConditionModel`` and a pretrained U-Net (Tango, AudioLDM) is used unchanged. Each value projection
starts at zero, so at initialisation the reference path adds exactly nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from diffusers import ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import ImageProjection
from torch import nn


def cross_attention_layers(unet: UNet2DConditionModel) -> dict[str, int]:
    """Processor name -> hidden size of every cross-attention layer (``attn2``) of ``unet``."""
    layers = {}
    for name, module in unet.named_modules():
        if name.endswith("attn2") and getattr(module, "is_cross_attention", False):
            layers[f"{name}.processor"] = module.inner_dim
    if not layers:
        raise ValueError("this U-Net has no cross-attention layer for reference tokens (unet.cross_attention)")
    return layers


def _key(processor_name: str) -> str:
    return processor_name.replace(".", "__")  # ModuleDict keys cannot hold dots


class ReferenceAttention(ModelMixin, ConfigMixin):
    """Reference -> tokens, and one reference key/value projection per U-Net cross-attention layer."""

    @register_to_config
    def __init__(
        self,
        reference_dim: int,
        cross_attention_dim: int,
        layers: dict[str, int],
        reference: str = "pooled",
        num_tokens: int = 4,
    ):
        super().__init__()
        if reference not in ("pooled", "frames"):
            raise ValueError(f"ReferenceAttention reference must be 'pooled' or 'frames', got {reference!r}")
        per_input = num_tokens if reference == "pooled" else 1
        self.projection = ImageProjection(reference_dim, cross_attention_dim, per_input)
        self.processors = nn.ModuleDict(
            {
                _key(name): IPAdapterAttnProcessor2_0(hidden, cross_attention_dim, num_tokens=(per_input,), scale=1.0)
                for name, hidden in layers.items()
            }
        )
        with torch.no_grad():
            for processor in self.processors.values():
                processor.to_v_ip[0].weight.zero_()

    @classmethod
    def for_unet(
        cls, unet: UNet2DConditionModel, reference_dim: int, reference: str = "pooled", num_tokens: int = 4
    ) -> ReferenceAttention:
        return cls(reference_dim, unet.config.cross_attention_dim, cross_attention_layers(unet), reference, num_tokens)

    def tokens(self, reference: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Reference tokens (B, N, cross_attention_dim) from pooled (B, R) or frame (B, T, R) references.

        ``keep`` (bool (B,) or (B, T)): False rows (a dropped reference) or frames (padding) become zero tokens,
        whose keys and values are zero, so they add nothing to any layer's output."""
        if self.config.reference == "pooled":
            if reference.dim() != 2:
                raise ValueError(f"pooled reference attention takes (B, R) references, got {tuple(reference.shape)}")
            tokens = self.projection(reference)
        else:
            if reference.dim() != 3:
                raise ValueError(f"frame reference attention takes (B, T, R) frames, got {tuple(reference.shape)}")
            b, t, r = reference.shape
            tokens = self.projection(reference.reshape(b * t, r)).reshape(b, t, -1)
        if keep is not None:
            keep = keep.to(tokens.dtype)
            tokens = tokens * (keep[:, None, None] if keep.dim() == 1 else keep[:, :, None])
        return tokens

    def attach(self, unet: UNet2DConditionModel) -> dict:
        """Make ``unet``'s cross-attention layers run this component's processors (they then take
        ``encoder_hidden_states=(text tokens, [reference tokens])``); returns the processors they had."""
        original = unet.attn_processors
        cross = [name for name in original if name.endswith("attn2.processor")]
        if sorted(_key(n) for n in cross) != sorted(self.processors):
            raise ValueError(
                f"this reference attention was built for another U-Net: its layers {sorted(self.processors)[:3]}..., "
                f"the U-Net's {sorted(_key(n) for n in cross)[:3]}..."
            )
        unet.set_attn_processor({n: self.processors[_key(n)] if n in cross else p for n, p in original.items()})
        return original

    @contextlib.contextmanager
    def attached(self, unet: UNet2DConditionModel) -> Iterator[None]:
        """``attach`` for the duration of the block; afterwards ``unet`` has its own processors back."""
        original = self.attach(unet)
        try:
            yield
        finally:
            unet.set_attn_processor(original)
