"""Typed, validated parameters (params.yaml): one pydantic model per stage.

Every model forbids unknown keys, so a typo stops the run with a message naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from seap_model.audio import MelSettings
from seap_model.errors import SeapError

# The clip length of the embedded default (13 latent columns of 0.16 s): what finetune trains on, and what a
# pipeline saved without its own ``duration`` generates.
DEFAULT_CLIP_SECONDS = 2.08
# A trained (teacher) pipeline's own sampling step count (DPM-Solver++ 2M). benchmarks/systems.py on the corpus-v2
# default: 10 steps in bf16 is within the seed noise of 10 in fp32, 8 and 5 steps lose label hit beyond it
# (docs/speed.md). A distilled pipeline records its own few.
DEFAULT_SAMPLING_STEPS = 10


class ParamsError(SeapError, ValueError):
    """params.yaml is missing, malformed or holds an invalid value; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _false_means(word: str) -> BeforeValidator:
    """YAML 1.1 (PyYAML, ``dvc exp run -S``) reads an unquoted off/no as false: take false as ``word``."""
    return BeforeValidator(lambda v: word if v is False else v)


class AudioParams(_Strict):
    sample_rate: int = Field(16000, gt=0)
    n_fft: int = Field(1024, gt=0)
    hop_length: int = Field(160, gt=0)
    n_mels: int = Field(64, gt=0)
    f_min: float = Field(0.0, ge=0)
    f_max: float = Field(8000.0, gt=0)

    @model_validator(mode="after")
    def _nyquist(self) -> AudioParams:
        if self.f_max > self.sample_rate / 2:
            raise ValueError(f"f_max ({self.f_max}) is above the Nyquist frequency ({self.sample_rate / 2})")
        if self.f_min >= self.f_max:
            raise ValueError(f"f_min ({self.f_min}) must be below f_max ({self.f_max})")
        return self

    def mel(self) -> MelSettings:
        return MelSettings(**self.model_dump())


class SplitParams(_Strict):
    """Shares of the collection's clips (or groups); every split gets at least one (later stages need each)."""

    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum(self) -> SplitParams:
        if self.val + self.test >= 1:
            raise ValueError("val + test must leave clips for training")
        return self


class SceneParams(_Strict):
    """How multi-event scenes (SERST clips with strong labels) are composed from the corpus."""

    seconds: float = Field(4.16, gt=0)
    scenes_per_clip: int = Field(3, gt=0)
    max_events: int = Field(2, ge=1)
    second_event_prob: float = Field(0.5, ge=0, le=1)
    event_gain_db: tuple[float, float] = (-6.0, 0.0)
    peak: float = Field(0.9, gt=0, le=1)
    trim_db: float = Field(-60.0, le=0, description="clip edges more than this many dB below its loudest frame are cut")


class ReferenceParams(_Strict):
    """The paper's 2 s sound-event references and their energy filter."""

    seconds: float = Field(2.0, gt=0)
    frame_seconds: float = Field(0.05, gt=0)
    active_db: float = Field(
        -35.0, le=0, description="frame is active if within this many dB of the clip's loudest frame"
    )
    min_active_fraction: float = Field(0.25, ge=0, le=1)
    pad_from_other_clips: bool = Field(
        False, description="pad a too-short reference with same-label spans of other clips of its split (not the paper)"
    )


class ShippedSource(_Strict):
    """The corpus shipped in the repository (``data.corpus``): single-event clips composed into scenes."""

    type: Literal["shipped"] = "shipped"


class _CollectionSource(_Strict):
    """A collection whose clips already carry strong labels: each clip is a scene (resampled, mono)."""

    clip_seconds: float = Field(10.0, gt=0, description="every clip is cut or zero-padded to this length")
    workers: int = Field(8, gt=0, description="parallel downloads")
    retries: int = Field(3, ge=0, description="retries per file after a failed or unverified transfer")
    timeout_s: float = Field(60.0, gt=0)


class _ManifestSource(_CollectionSource):
    manifest: str = Field(description="JSONL (one clip per line) or CSV (one event per row), relative to the source")
    labels: str | None = Field(None, description="optional CSV 'label,caption': the known labels; others are rejected")


class LocalSource(_ManifestSource):
    type: Literal["local"]
    root: str


class HttpSource(_ManifestSource):
    type: Literal["http"]
    base_url: str

    @field_validator("base_url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {v!r}")
        return v


class S3Source(_ManifestSource):
    type: Literal["s3"]
    bucket: str = Field(min_length=3)
    prefix: str = ""
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, ...); None: AWS")
    region: str | None = None
    anonymous: bool = Field(False, description="unsigned requests (public buckets); else boto3's credential chain")


class AudioSetStrongSource(_CollectionSource):
    """The WavCaps copy of AudioSet's strongly-labelled subset: captions JSON + strong-label TSVs + flac files."""

    type: Literal["audioset_strong"]
    location: str = Field(description="a folder, an http(s):// base URL or s3://bucket/prefix")
    endpoint_url: str | None = None
    region: str | None = None
    anonymous: bool = False
    captions: str = "json_files/AudioSet_SL/as_final.json"
    strong_labels: tuple[str, ...] = ("audioset_train_strong.tsv", "audioset_eval_strong.tsv")
    label_names: str = "mid_to_display_name.tsv"
    audio_dir: str = "AudioSet_SL"
    audio_ext: str = ".flac"


SourceParams = Annotated[
    ShippedSource | LocalSource | HttpSource | S3Source | AudioSetStrongSource, Field(discriminator="type")
]


class DataParams(_Strict):
    corpus: str = "data/sound_events_v2"  # corpus v2; data/sound_events is v1 (the tests' small fixture)
    raw_dir: str = "data/raw"
    serst_dir: str = "data/serst"
    report_dir: str = "outputs/segment"
    source: SourceParams = ShippedSource()
    workers: int = Field(0, ge=0, description="segmentation processes; 0: one per CPU core")
    split: SplitParams = SplitParams()
    scenes: SceneParams = SceneParams()
    references: ReferenceParams = ReferenceParams()


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


class FinetuneParams(_Strict):
    out_dir: str = "models/pipeline"
    cache_dir: str = "data/cache"
    checkpoint_dir: str = "models/finetune_checkpoint"
    report_dir: str = "outputs/finetune"
    # Off in the main job (it doubles the fine-tune's time; the 90-minute budget keeps SEAP at its measured step
    # count instead): the text-only comparison over training seeds is experiments/seeds.py's.
    baseline: bool = Field(
        False,
        description="also train the text-only baseline (style off; same U-Net, steps, seed and data) into "
        "baseline_dir, so evaluate compares systems trained alike in one run",
    )
    baseline_dir: str = "models/text_only"
    train_seconds: float = Field(DEFAULT_CLIP_SECONDS, gt=0)
    unet: UNetParams = UNetParams()
    adapter: AdapterParams = AdapterParams()
    # decoupled (with adapter.reference frames) is the default on measured evidence over training seeds
    # (docs/reference-conditioning.md); cross_attention with a pooled reference is the paper's adapter.
    style: Annotated[Literal["cross_attention", "concat", "decoupled", "off"], _false_means("off")] = Field(
        "decoupled",
        description="cross_attention (the paper's adapter) or concat: one style vector joined to the timestep "
        "(adaptive norm); decoupled: reference tokens through a second key/value in every U-Net cross-attention "
        "(IP-Adapter style, zero-initialised); off: text only",
    )
    reference_window: Literal["overlapping", "outside"] = Field(
        "overlapping",
        description="where a training window's reference comes from: the label's spans (which overlap the "
        "window being denoised), or outside it (other spans of the label, else a shifted, re-cropped, "
        "re-gained copy), so that the model cannot learn to paste the reference",
    )
    trainable: Literal["adapter_unet", "adapter_modulation"] = Field(
        "adapter_unet", description="adapter + whole U-Net (paper), or adapter + the style/norm modulation only"
    )
    train_encoder: bool = Field(
        False, description="fine-tune the H/ASP reference encoder with the adapter (the paper keeps it frozen)"
    )
    encoder_lr_scale: float = Field(0.1, gt=0, le=1, description="train_encoder: encoder LR = lr x this")
    seed: int | None = Field(
        None,
        ge=0,
        description="training seed (init, batches, noise); None: the top-level seed. Data splits keep theirs",
    )
    steps: int = Field(2400, gt=0)
    batch_size: int = Field(16, gt=0)
    gradient_accumulation: int = Field(1, gt=0)
    gradient_checkpointing: bool = False
    optimizer: Literal["adamw", "adafactor"] = Field(
        "adamw", description="adafactor is the paper's (configs/paper.yaml); AdamW measured best for the CPU default"
    )
    lr: float = Field(6e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(1e-2, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1, description="0 disables EMA weights")
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    num_train_timesteps: int = Field(1000, gt=0)
    beta_schedule: Literal["squaredcos_cap_v2", "scaled_linear", "linear"] = Field(
        "squaredcos_cap_v2", description="noise schedule; a pretrained U-Net keeps its own (Tango: scaled_linear)"
    )
    beta_start: float = Field(0.00085, gt=0, description="scaled_linear/linear only")
    beta_end: float = Field(0.012, gt=0, description="scaled_linear/linear only")
    min_snr_gamma: float = Field(5.0, gt=0)
    drop_both: float = Field(0.1, ge=0, le=1, description="text and style dropped together (guidance)")
    drop_style: float = Field(0.1, ge=0, le=1, description="style alone dropped (text without reference)")
    drop_text: float = Field(0.0, ge=0, le=1, description="text alone dropped (to guide text and style apart)")
    mixed_precision: Annotated[Literal["auto", "no", "bf16", "fp16"], _false_means("no")] = Field(
        "auto", description="auto: bf16 where the device computes it natively, else fp16 on a GPU, fp32 on a CPU"
    )
    checkpoint_every: int = Field(500, gt=0)
    log_every: int = Field(50, gt=0)

    @model_validator(mode="after")
    def _drops(self) -> FinetuneParams:
        if self.drop_both + self.drop_style + self.drop_text > 1:
            raise ValueError("drop_both + drop_style + drop_text must be at most 1")
        return self

    # What ``style`` and ``adapter.reference`` ask for, decided here only: the cache, the model builders and the
    # finetune stage read these, never the strings.
    @property
    def uses_reference(self) -> bool:
        """The model is conditioned on a reference at all (``style`` is not off)."""
        return self.style != "off"

    @property
    def uses_adapter(self) -> bool:
        """A ``StyleAdapter`` joins the reference to the text (cross_attention) or to the timestep (concat)."""
        return self.style in ("cross_attention", "concat")

    @property
    def uses_reference_attention(self) -> bool:
        """Reference tokens reach the U-Net through a second key/value in its cross-attention (decoupled)."""
        return self.style == "decoupled"

    @property
    def uses_frames(self) -> bool:
        """Fine-tuning reads the reference encoder's frame sequences, not only their pooled embeddings."""
        return self.uses_reference and self.adapter.reference == "frames"


SCHEDULERS = ("dpmpp-2m", "dpmpp-3m", "unipc", "ddim", "ddpm", "euler")  # diffusers samplers, by name
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class SamplingParams(_Strict):
    """How a clip is sampled: the one definition of the sampling settings. ``seap generate``'s flags, the batch
    flow's parameters, batch job rows, the web page's controls and the evaluation are derived from these fields
    (``seap_model.flags``). The defaults come from ``benchmarks/generation.py`` (docs/speed.md); the upper
    bounds keep one request (a batch row, a page visitor) from holding the model for hours."""

    scheduler: Literal[SCHEDULERS] | None = Field(  # type: ignore[valid-type]
        None, description="sampler (None: the one saved with the pipeline, DPM-Solver++ 2M)"
    )
    steps: int | None = Field(
        None, gt=0, le=1000, description="sampling steps, U-Net calls per clip (None: the pipeline's own default)"
    )
    guidance: float = Field(
        4.0, ge=0, le=50, allow_inf_nan=False, description="one scale for text and reference together"
    )
    text_guidance: float | None = Field(
        None, ge=0, le=50, allow_inf_nan=False, description="text scale (None: guidance)"
    )
    style_guidance: float | None = Field(
        None, ge=0, le=50, allow_inf_nan=False, description="reference scale, on top of the text (None: guidance)"
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="noise seed (each item's generator: this seed and the item's id)"
    )
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        "auto",
        description="U-Net arithmetic: auto (bf16 where the device computes it natively, else fp32), fp32, bf16 or "
        "fp16 (autocast); the sampler, codec decode and vocoder stay in fp32",
    )
    vocoder_iterations: int | None = Field(
        None, gt=0, description="Griffin-Lim iterations (None: the vocoder's own; a HiFi-GAN vocoder has none)"
    )
    duration: float | None = Field(
        None, gt=0, le=60, allow_inf_nan=False, description="seconds of audio (None: the pipeline's own clip length)"
    )


PROTOCOLS = ("paper", "transfer", "conflict", "unseen", "memorisation")


class EvaluateParams(_Strict):
    out_dir: str = "outputs/evaluate"
    # The evaluation samples as generation does (10 steps): the steps sweep (steps_sweep) is flat from 5 steps
    # on, and measures the others.
    sampling: SamplingParams = SamplingParams()
    seeds: tuple[int, ...] = Field(
        (0, 1), min_length=1, description="sampling seeds; headline numbers are mean +- std over them"
    )
    max_items: int | None = Field(192, gt=0, description="items spread over the split (None: every item)")
    split: Literal["test", "train"] = Field(
        "test", description="items and references: test (unseen recordings) or train (recordings trained on)"
    )
    batch_size: int = Field(8, gt=0)
    top_k: int = Field(10, gt=0)
    protocols: tuple[Literal["paper", "transfer", "conflict", "unseen", "memorisation"], ...] = PROTOCOLS
    unseen_captions: str = Field("data/captions/unseen.csv", description="label,caption table (never trained on)")
    style_evaluator: Literal["yamnet", "panns", "clap"] = Field(
        "yamnet", description="embeds outputs and references for style similarity (never the conditioning encoder)"
    )
    panns_checkpoint: str | None = Field(None, description="Cnn14 .pth: FD/KL/IS on PANNs (default: YAMNet)")
    vggish_checkpoint: str | None = Field(None, description="VGGish .pth: FAD on VGGish (default: YAMNet embedding)")
    clap: str | None = Field(None, description="transformers ClapModel folder or hub id: CLAP text-audio score")
    memorisation_crops: int = Field(400, gt=0, description="training crops the nearest-neighbour search covers")
    report_items: int = Field(6, ge=0, description="items with audio players and spectrograms in report.html")
    sweep_items: int = Field(24, gt=0, description="transfer items each sweep point is scored on (first seed)")
    guidance_sweep: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    steps_sweep: tuple[int, ...] = (5, 10, 25)
    reference_seconds_sweep: tuple[float, ...] = (0.5, 1.0, 2.0)
    style_guidance_sweep: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)

    @field_validator("seeds", "protocols")
    @classmethod
    def _unique(cls, v: tuple) -> tuple:
        if len(set(v)) != len(v):
            raise ValueError(f"has a repeated entry: {list(v)}")
        return v


class GenerateParams(_Strict):
    out_dir: str = "outputs/generated"
    prompts: str | None = Field(
        None,
        description='JSONL of {"id", "prompt", "reference"} (reference: a path under the file\'s folder); default: the '
        "test split",
    )
    batch_size: int = Field(8, gt=0)
    sampling: SamplingParams = SamplingParams()
    max_items: int | None = Field(48, gt=0, description="test-split items to generate (None: all)")


class DistillParams(_Strict):
    """Guided latent consistency distillation of the fine-tuned pipeline (the teacher) into a few-step one."""

    # On in the main job: about 1 s a step on 2 CPU cores, it fits the 90-minute budget beside the teacher's
    # training (the stage times are in docs/results.md).
    enabled: bool = Field(True, description="run the distillation (off: the stage records that it did not)")
    out_dir: str = "models/pipeline_fast"
    checkpoint_dir: str = "models/distill_checkpoint"
    report_dir: str = "outputs/distill"
    steps: int = Field(600, gt=0, description="optimiser steps")
    batch_size: int = Field(16, gt=0)
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(50, ge=0)
    target_decay: float = Field(0.95, ge=0, lt=1, description="moving average of the student that gives targets")
    solver_steps: int = Field(50, gt=1, description="the teacher's DDIM grid: each target is one step along it")
    text_guidance: tuple[float, float] = Field((1.0, 8.0), description="text scales distilled in: [low, high]")
    style_guidance: tuple[float, float] = Field((0.0, 8.0), description="style scales distilled in: [low, high]")
    drop_reference: float = Field(0.1, ge=0, le=1, description="share of items distilled without their reference")
    guidance_dim: int = Field(256, gt=0, description="width of the embedded scales (a multiple of 4)")
    huber_c: float = Field(0.001, gt=0, description="pseudo-Huber loss constant")
    sampling_steps: int = Field(2, gt=0, le=8, description="the distilled pipeline's default step count")
    checkpoint_every: int = Field(250, gt=0)
    log_every: int = Field(50, gt=0)

    @model_validator(mode="after")
    def _ranges(self) -> DistillParams:
        for name in ("text_guidance", "style_guidance"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be [low, high] with 0 <= low <= high, got [{low}, {high}]")
        if self.guidance_dim % 4:
            raise ValueError(f"guidance_dim must be a multiple of 4, got {self.guidance_dim}")
        return self


class Params(_Strict):
    seed: int = 0
    audio: AudioParams = AudioParams()
    data: DataParams = DataParams()
    encoder: EncoderParams = EncoderParams()
    codec: CodecParams = CodecParams()
    vocoder: VocoderParams = VocoderParams()
    text_encoder: TextEncoderParams = TextEncoderParams()
    finetune: FinetuneParams = FinetuneParams()
    distill: DistillParams = DistillParams()
    evaluate: EvaluateParams = EvaluateParams()
    generate: GenerateParams = GenerateParams()

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if v < 0:
            raise ValueError("seed must be >= 0")
        return v

    @model_validator(mode="after")
    def _trainable_encoder(self) -> Params:
        if self.finetune.train_encoder and self.encoder.type != "hasp":
            raise ValueError(
                f"finetune.train_encoder needs encoder.type 'hasp' ('{self.encoder.type}' is a frozen ONNX model)"
            )
        if self.finetune.train_encoder and not self.finetune.uses_reference:
            raise ValueError("finetune.train_encoder needs a style path (finetune.style is 'off')")
        return self


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = "unknown key (typo?)" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_params(data: dict, source: str = "params") -> Params:
    """Validate a params mapping; raise ParamsError naming every bad key."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ParamsError(_describe(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params YAML file."""
    path = Path(path)
    return parse_params(load_yaml_mapping(path), str(path))


def load_yaml_mapping(path: Path) -> dict:
    """A YAML file whose top level is a mapping (or empty); ParamsError otherwise."""
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    if data is not None and not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping of parameter sections")
    return data or {}


def _deep_update(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = (
            _deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def merge_params(params: Params, overrides_path: str | Path) -> Params:
    """Apply a (partial) overrides YAML on top of ``params``; the result is validated like params.yaml."""
    path = Path(overrides_path)
    overrides = load_yaml_mapping(path)
    return parse_params(_deep_update(params.model_dump(mode="json"), overrides), f"{path} (over params)")
