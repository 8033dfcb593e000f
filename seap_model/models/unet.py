"""The latent-diffusion U-Net: diffusers' UNet2DConditionModel with the style vector joined to the timestep.

Text tokens feed cross-attention as usual. The style vector goes through the U-Net's class-embedding MLP and
is added to the timestep embedding; with ``resnet_time_scale_shift="scale_shift"`` that sum gives every
ResNet block the scale and shift of its group norm (adaptive norm). The MLP's last layer starts at zero, so
at initialisation the style path adds exactly nothing and a pretrained U-Net's output is unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.embeddings import get_timestep_embedding

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


def guidance_embedding(scales: torch.Tensor, dim: int) -> torch.Tensor:
    """A distilled U-Net's guidance input (``timestep_cond``): each of the (B, k) scales (text, style) embedded
    sinusoidally as LCM embeds its one scale (scale x 1000, diffusers' timestep embedding), concatenated to
    (B, dim)."""
    k = scales.shape[1]
    if dim % (2 * k):
        raise ValueError(f"guidance embedding width {dim} is not a multiple of {2 * k}")
    parts = [get_timestep_embedding(scales[:, i].float() * 1000, dim // k) for i in range(k)]
    return torch.cat(parts, dim=1)


def add_guidance_input(unet: UNet2DConditionModel, dim: int) -> UNet2DConditionModel:
    """A copy of ``unet`` that also takes embedded guidance scales (``timestep_cond``, width ``dim``), added to
    its timestep embedding through a zero-initialised projection: it starts as exactly ``unet`` (the student of a
    guided consistency distillation starts as its teacher)."""
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    config.update(time_cond_proj_dim=dim)
    student = UNet2DConditionModel.from_config(config)
    missing, unexpected = student.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("time_embedding.cond_proj.") for k in missing):
        raise ValueError(f"U-Net weights do not fit the guided U-Net: missing={missing} unexpected={unexpected}")
    with torch.no_grad():
        student.time_embedding.cond_proj.weight.zero_()
    return student


def build_unet(params: UNetParams, latent_channels: int, text_dim: int, style_dim: int | None) -> UNet2DConditionModel:
    """Build the U-Net from params, or load ``params.pretrained`` and add the zero-initialised style path."""
    if params.pretrained:
        base = load_pretrained_unet(params.pretrained)
        _check_dims(base, latent_channels, text_dim, params.pretrained)
        return add_style_path(base, style_dim) if style_dim is not None else base
    unet = UNet2DConditionModel.from_config(unet_config(params, latent_channels, text_dim, style_dim))
    if style_dim is not None:
        zero_init_style(unet)
    return unet


TANGO_WEIGHTS = "pytorch_model_main.bin"
TANGO_CONFIGS = ("unet_config.json", "diffusion_model_config.json")


def load_pretrained_unet(source: str) -> UNet2DConditionModel:
    """A pretrained U-Net from a Tango checkpoint folder, a diffusers folder (or its ``unet/``) or a hub id.

    Tango folder: ``pytorch_model_main.bin`` (the whole AudioDiffusion state dict; its ``unet.*`` weights are
    used) next to the U-Net's diffusers config, named ``unet_config.json`` or ``diffusion_model_config.json``
    (Tango ships it as ``configs/diffusion_model_config.json``).
    """
    folder = Path(source)
    if (folder / TANGO_WEIGHTS).is_file():
        return _load_tango_unet(folder)
    subfolder = "unet" if (folder / "unet" / "config.json").is_file() else None
    return UNet2DConditionModel.from_pretrained(source, subfolder=subfolder)


def _load_tango_unet(folder: Path) -> UNet2DConditionModel:
    config_file = next((folder / n for n in TANGO_CONFIGS if (folder / n).is_file()), None)
    if config_file is None:
        raise FileNotFoundError(f"{folder}: a Tango checkpoint needs its U-Net config as one of {TANGO_CONFIGS}")
    unet = UNet2DConditionModel.from_config(json.loads(config_file.read_text()))
    state = torch.load(folder / TANGO_WEIGHTS, map_location="cpu", weights_only=True)
    weights = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    if not weights:
        raise ValueError(f"{folder / TANGO_WEIGHTS}: no 'unet.*' weights in this checkpoint")
    expected = unet.state_dict()
    for key, value in weights.items():
        if key in expected and expected[key].shape != value.shape:
            raise ValueError(
                f"Tango U-Net {folder / TANGO_WEIGHTS}: '{key}' has shape {tuple(value.shape)}, "
                f"the config {config_file.name} expects {tuple(expected[key].shape)}"
            )
    missing, unexpected = unet.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"Tango U-Net {folder / TANGO_WEIGHTS} does not match {config_file.name}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
        )
    return unet


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
