"""The Sound Event Enhanced Prompt Adapter: text tokens attend to the reference, then mean pooling.

With ``reference="pooled"`` (the paper's form, and its released code) the only key is one pooled embedding, so
the softmax over keys is 1 for every text token: the attention output is the same linear map of the reference
added to every token. With ``reference="frames"`` the keys are the reference encoder's frames before pooling,
so each text token weighs the frames its own way.
"""

from __future__ import annotations

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

MODES = ("cross_attention", "concat")
REFERENCE_FORMS = ("pooled", "frames")


class StyleAdapter(ModelMixin, ConfigMixin):
    """Residual multi-head cross-attention (queries: text tokens; keys/values: the reference) + masked mean pooling.

    ``mode="cross_attention"`` is the paper's adapter; ``mode="concat"`` is the ablation that concatenates the
    pooled text with the projected (mean) reference instead. The output (B, text_dim) is the style vector that
    the U-Net joins to its timestep embedding. A dropped reference gives the zero style vector.
    """

    @register_to_config
    def __init__(
        self,
        text_dim: int,
        reference_dim: int,
        num_heads: int = 4,
        mode: str = "cross_attention",
        reference: str = "pooled",
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"StyleAdapter mode must be one of {MODES}, got {mode!r}")
        if reference not in REFERENCE_FORMS:
            raise ValueError(f"StyleAdapter reference must be one of {REFERENCE_FORMS}, got {reference!r}")
        if text_dim % num_heads:
            raise ValueError(f"text_dim {text_dim} is not divisible by num_heads {num_heads}")
        # frames are un-normalised activations of the encoder's last block: one LayerNorm puts them on one scale
        self.frame_norm = nn.LayerNorm(reference_dim) if reference == "frames" else None
        if mode == "cross_attention":
            self.attention = nn.MultiheadAttention(
                text_dim, num_heads, kdim=reference_dim, vdim=reference_dim, batch_first=True
            )
        else:
            self.project = nn.Linear(text_dim + reference_dim, text_dim)

    def _keys(self, reference: torch.Tensor) -> torch.Tensor:
        expected = 2 if self.config.reference == "pooled" else 3
        if reference.dim() != expected:
            shape = "(B, reference_dim)" if expected == 2 else "(B, frames, reference_dim)"
            raise ValueError(
                f"StyleAdapter(reference={self.config.reference!r}) takes references shaped {shape}, "
                f"got {tuple(reference.shape)}"
            )
        if reference.dim() == 2:
            return reference.unsqueeze(1)
        return self.frame_norm(reference)

    def attention_weights(
        self, text_tokens: torch.Tensor, reference: torch.Tensor, reference_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-head attention weights (B, heads, text tokens, reference keys) of the cross-attention."""
        keys = self._keys(reference)
        pad = None if reference_mask is None else ~reference_mask.bool()
        _, weights = self.attention(
            text_tokens, keys, keys, key_padding_mask=pad, need_weights=True, average_attn_weights=False
        )
        return weights

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        reference: torch.Tensor,
        keep_reference: torch.Tensor | None = None,
        reference_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Style vector (B, text_dim).

        reference: pooled embeddings (B, R), or frames (B, T, R) with ``reference="frames"``.
        keep_reference: optional bool (B,); False rows get the zero style (reference dropped).
        reference_mask: optional bool (B, T), False for padding frames (references of different lengths).
        """
        keys = self._keys(reference)
        mask = text_mask.to(text_tokens.dtype).unsqueeze(-1)
        if self.config.mode == "cross_attention":
            pad = None if reference_mask is None else ~reference_mask.bool()
            attended, _ = self.attention(text_tokens, keys, keys, key_padding_mask=pad, need_weights=False)
            tokens = text_tokens + attended
            style = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        else:
            pooled = (text_tokens * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            if reference_mask is None:
                ref = keys.mean(1)
            else:
                valid = reference_mask.to(keys.dtype).unsqueeze(-1)
                ref = (keys * valid).sum(1) / valid.sum(1).clamp_min(1.0)
            style = self.project(torch.cat([pooled, ref], dim=-1))
        if keep_reference is not None:
            style = style * keep_reference.to(style.dtype).unsqueeze(-1)
        return style
