"""The latent-diffusion U-Net: diffusers' UNet2DConditionModel with the style vector joined to the timestep.

Text tokens feed cross-attention as usual. The style vector goes through the U-Net's class-embedding MLP and
is added to the timestep embedding; with ``resnet_time_scale_shift="scale_shift"`` that sum gives every
ResNet block the scale and shift of its group norm (adaptive norm). The MLP's last layer starts at zero, so
at initialisation the style path adds exactly nothing and a pretrained U-Net's output is unchanged.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from seap_model.config import UNetParams


def unet_config(params: UNetParams, latent_channels: int, text_dim: int, style_dim: int | None) -> dict:
    """UNet2DConditionModel config for the embedded default (style_dim=None: the text-only U-Net)."""
    levels = len(params.block_out_channels)
    down = [("CrossAttnDownBlock2D" if xa else "DownBlock2D") for xa in params.cross_attention]
    up = [("CrossAttnUpBlock2D" if xa else "UpBlock2D") for xa in reversed(params.cross_attention)]
    # Last down / first up level are never downsampled further; diffusers handles that from the list length.
    config = dict(
        sample_size=None,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=list(params.block_out_channels),
        layers_per_block=params.layers_per_block,
        cross_attention_dim=text_dim,
        # diffusers names the head COUNT attention_head_dim for this model (a known misnomer).
        attention_head_dim=params.attention_heads,
        norm_num_groups=min(32, min(params.block_out_channels) // 2),
        resnet_time_scale_shift="scale_shift" if params.adaptive_norm else "default",
    )
    if style_dim is not None:
        config.update(class_embed_type="projection", projection_class_embeddings_input_dim=style_dim)
    assert levels == len(down)
    return config


def add_style_path(unet: UNet2DConditionModel, style_dim: int) -> UNet2DConditionModel:
    """Return a copy of ``unet`` with a zero-initialised style (class-embedding) path added.

    Used to start from a pretrained text-only U-Net (e.g. Tango's): every pretrained weight is copied.
    """
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}  # drop _use_default_values etc.
    config.update(class_embed_type="projection", projection_class_embeddings_input_dim=style_dim)
    styled = UNet2DConditionModel.from_config(config)
    missing, unexpected = styled.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise ValueError(f"U-Net weights do not fit the styled U-Net: missing={missing} unexpected={unexpected}")
    zero_init_style(styled)
    return styled


def zero_init_style(unet: UNet2DConditionModel) -> None:
    """Zero the last layer of the style MLP so the style path starts as an exact no-op."""
    if unet.class_embedding is None:
        raise ValueError("this U-Net has no style path (class_embed_type is None)")
    with torch.no_grad():
        unet.class_embedding.linear_2.weight.zero_()
        unet.class_embedding.linear_2.bias.zero_()


def build_unet(params: UNetParams, latent_channels: int, text_dim: int, style_dim: int | None) -> UNet2DConditionModel:
    """Build the U-Net from params, or load ``params.pretrained`` (hub id or local diffusers folder)."""
    if params.pretrained:
        base = UNet2DConditionModel.from_pretrained(params.pretrained, subfolder=_unet_subfolder(params.pretrained))
        _check_dims(base, latent_channels, text_dim, params.pretrained)
        return add_style_path(base, style_dim) if style_dim is not None else base
    unet = UNet2DConditionModel.from_config(unet_config(params, latent_channels, text_dim, style_dim))
    if style_dim is not None:
        zero_init_style(unet)
    return unet


def _unet_subfolder(path: str) -> str | None:
    from pathlib import Path

    return "unet" if (Path(path) / "unet" / "config.json").is_file() else None


def _check_dims(unet: UNet2DConditionModel, latent_channels: int, text_dim: int, source: str) -> None:
    if unet.config.in_channels != latent_channels:
        raise ValueError(
            f"pretrained U-Net {source}: in_channels {unet.config.in_channels} "
            f"!= codec latent channels {latent_channels}"
        )
    if unet.config.cross_attention_dim != text_dim:
        raise ValueError(
            f"pretrained U-Net {source}: cross_attention_dim {unet.config.cross_attention_dim} "
            f"!= text encoder width {text_dim}"
        )
