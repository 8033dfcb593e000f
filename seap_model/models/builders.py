"""The networks a fine-tune trains, built from ``finetune`` params: the U-Net and the style path that
``finetune.style`` asks for (a ``StyleAdapter``, the decoupled ``ReferenceAttention``, or neither)."""

from __future__ import annotations

from diffusers import UNet2DConditionModel

from seap_model.config import FinetuneParams
from seap_model.models.adapter import StyleAdapter
from seap_model.models.reference_attention import ReferenceAttention
from seap_model.models.unet import build_unet


def build_styled_unet(
    fp: FinetuneParams, latent_channels: int, text_dim: int, reference_dim: int
) -> tuple[UNet2DConditionModel, StyleAdapter | None, ReferenceAttention | None]:
    """The U-Net (with a style input where an adapter feeds it), the adapter and the reference attention; the
    parts the style does not use are None. ``reference_dim``: the width of a pooled embedding or of a frame."""
    unet = build_unet(fp.unet, latent_channels, text_dim, text_dim if fp.uses_adapter else None)
    adapter = (
        StyleAdapter(text_dim, reference_dim, fp.adapter.heads, fp.style, fp.adapter.reference)
        if fp.uses_adapter
        else None
    )
    reference_attention = (
        ReferenceAttention.for_unet(unet, reference_dim, fp.adapter.reference, fp.adapter.tokens)
        if fp.uses_reference_attention
        else None
    )
    return unet, adapter, reference_attention
