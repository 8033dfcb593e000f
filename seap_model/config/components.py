"""The components' sections: reference encoder, codec, vocoder, text encoder, U-Net and adapter."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from seap_model.config.base import _Strict


class EncoderParams(_Strict):
    """Reference encoder: H/ASP (SE-ResNet + attentive statistics pooling) pretrained here, or frozen YAMNet."""

    type: Literal["hasp", "yamnet"] = Field(
        "hasp", description="'hasp': trained by pretrain-encoder; 'yamnet': frozen AudioSet YAMNet logits"
    )
    out_dir: str = "models/reference_encoder"
    report_dir: str = "outputs/pretrain_encoder"
    channels: tuple[int, int, int, int] = (16, 32, 64, 128)
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    embedding_dim: int = Field(128, gt=0)
    min_seconds: float = Field(0.5, gt=0, description="shortest reference the encoder accepts")
    pad_short: bool = Field(False, description="repeat a shorter reference up to min_seconds instead of an error")
    score_references: int | None = Field(
        1000, gt=0, description="train and held-out references the scoring embeds, each spread over its set (None: all)"
    )
    crop_seconds: float = Field(1.0, gt=0, description="training crop (< reference length)")
    steps: int = Field(300, gt=0)
    batch_size: int = Field(32, ge=2, description="crops per step: batch_size // 2 sources x 2 crops")
    lr: float = Field(1e-3, gt=0)
    am_margin: float = Field(0.2, ge=0, description="AM-softmax additive margin")
    am_scale: float = Field(30.0, gt=0, description="AM-softmax scale")
    proto_weight: float = Field(1.0, ge=0, description="weight of the angular prototypical loss (0: softmax only)")
    freq_mask: int = Field(0, ge=0, description="SpecAugment: widest mel-band mask (bins) per training crop")
    time_mask: int = Field(0, ge=0, description="SpecAugment: widest time mask (frames) per training crop")
    distill_weight: float = Field(
        0.0, ge=0, description="weight of a cosine loss to frozen YAMNet's embedding of the reference (0: off)"
    )
    yamnet_pooling: Literal["log_mean_score", "mean_logit", "mean_max_logit"] = Field(
        "log_mean_score", description="type yamnet: how the per-patch outputs are pooled over time"
    )


class CodecParams(_Strict):
    """Latent codec: fixed mel patchify (embedded default), a small trained AutoencoderKL, or a pretrained VAE."""

    type: Literal["patchify", "autoencoder_kl", "pretrained"] = "patchify"
    out_dir: str = "models/codec"
    report_dir: str = "outputs/pretrain_vae"
    patch: int = Field(4, gt=0)
    pretrained: str | None = None
    latent_channels: int = Field(8, gt=0)
    block_out_channels: tuple[int, ...] = (32, 64)
    steps: int = Field(300, gt=0)
    batch_size: int = Field(16, gt=0)
    lr: float = Field(1e-3, gt=0)
    kl_weight: float = Field(1e-4, ge=0)

    @model_validator(mode="after")
    def _pretrained_needs_path(self) -> CodecParams:
        if self.type == "pretrained" and not self.pretrained:
            raise ValueError("codec.type 'pretrained' needs codec.pretrained (a hub id or local path)")
        return self


class VocoderParams(_Strict):
    """Log-mel -> waveform: the learned vocoder the pretrain-vocoder stage trains (embedded default), Griffin-Lim
    (no weights) or a pretrained HiFi-GAN (e.g. AudioLDM's ``vocoder/``)."""

    type: Literal["learned", "griffin_lim", "hifigan"] = "learned"
    out_dir: str = Field("models/vocoder", description="where pretrain-vocoder saves the learned vocoder")
    report_dir: str = "outputs/pretrain_vocoder"
    pretrained: str | None = None
    griffin_lim_iters: int = Field(8, gt=0)
    channels: int = Field(256, gt=0, description="learned: width of the magnitude network")
    layers: int = Field(8, gt=0, description="learned: residual blocks (dilations 1, 2, 4, 8, repeating)")
    steps: int = Field(1500, gt=0, description="learned: training steps")
    unrolled_steps: int = Field(
        0, ge=0, description="learned: the last steps also train through Griffin-Lim (slower per step)"
    )
    batch_size: int = Field(16, gt=0)
    crop_seconds: float = Field(1.0, gt=0, description="learned: length of each training crop")
    lr: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _pretrained_needs_path(self) -> VocoderParams:
        if self.type == "hifigan" and not self.pretrained:
            raise ValueError("vocoder.type 'hifigan' needs vocoder.pretrained (a hub id or local path)")
        if self.unrolled_steps > self.steps:
            raise ValueError(f"vocoder.unrolled_steps ({self.unrolled_steps}) must be <= vocoder.steps ({self.steps})")
        return self


class TextEncoderParams(_Strict):
    name: str = Field(
        "minilm", description="'minilm' (packaged all-MiniLM-L6-v2), or a FLAN-T5/BERT hub id or local path"
    )
    max_length: int = Field(32, gt=0)


class UNetParams(_Strict):
    block_out_channels: tuple[int, ...] = (64, 128, 192)
    layers_per_block: int = Field(1, gt=0)
    cross_attention: tuple[bool, ...] = (False, True, True)
    attention_heads: int = Field(4, gt=0)
    adaptive_norm: bool = Field(
        True, description="(timestep + style) gives each ResNet norm its scale and shift; False: an additive bias"
    )
    pretrained: str | None = Field(None, description="diffusers U-Net folder / hub id, or a Tango checkpoint folder")

    @model_validator(mode="after")
    def _levels(self) -> UNetParams:
        if len(self.cross_attention) != len(self.block_out_channels):
            raise ValueError("cross_attention needs one flag per entry of block_out_channels")
        return self


class AdapterParams(_Strict):
    """What the reference looks like to the model: the pooled embedding (the paper) or its frame sequence."""

    heads: int = Field(4, gt=0)
    # frames is the default on measured evidence (docs/reference-conditioning.md); pooled is the paper's form.
    reference: Literal["pooled", "frames"] = Field(
        "frames",
        description="pooled: text tokens attend to one pooled embedding (the paper's form, a softmax over one key); "
        "frames: to the encoder's frame sequence before pooling, so each token weighs the frames its own way",
    )
    tokens: int = Field(4, gt=0, description="style 'decoupled' with a pooled reference: tokens it is projected to")
