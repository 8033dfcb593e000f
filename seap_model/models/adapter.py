"""The Sound Event Enhanced Prompt Adapter: text tokens attend to the reference embedding, then mean pooling."""

from __future__ import annotations

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn


class StyleAdapter(ModelMixin, ConfigMixin):
    """Residual multi-head cross-attention (queries: text tokens; keys/values: the reference) + masked mean pooling.

    ``mode="cross_attention"`` is the paper's adapter; ``mode="concat"`` is the ablation that concatenates the
    pooled text with the projected reference instead. The output (B, text_dim) is the style vector that
    the U-Net joins to its timestep embedding. A dropped reference gives the zero style vector.
    """

    @register_to_config
    def __init__(self, text_dim: int, reference_dim: int, num_heads: int = 4, mode: str = "cross_attention"):
        super().__init__()
        if mode not in {"cross_attention", "concat"}:
            raise ValueError(f"StyleAdapter mode must be 'cross_attention' or 'concat', got {mode!r}")
        if text_dim % num_heads:
            raise ValueError(f"text_dim {text_dim} is not divisible by num_heads {num_heads}")
        if mode == "cross_attention":
            self.attention = nn.MultiheadAttention(
                text_dim, num_heads, kdim=reference_dim, vdim=reference_dim, batch_first=True
            )
        else:
            self.project = nn.Linear(text_dim + reference_dim, text_dim)

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        reference: torch.Tensor,
        keep_reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Style vector (B, text_dim).

        reference: pooled embeddings (B, R) or a frame sequence (B, T, R).
        keep_reference: optional bool (B,); False rows get the zero style (reference dropped).
        """
        if reference.dim() == 2:
            reference = reference.unsqueeze(1)
        mask = text_mask.to(text_tokens.dtype).unsqueeze(-1)
        if self.config.mode == "cross_attention":
            attended, _ = self.attention(text_tokens, reference, reference, need_weights=False)
            tokens = text_tokens + attended
            style = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        else:
            pooled = (text_tokens * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            style = self.project(torch.cat([pooled, reference.mean(1)], dim=-1))
        if keep_reference is not None:
            style = style * keep_reference.to(style.dtype).unsqueeze(-1)
        return style
