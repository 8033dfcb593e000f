"""How clips are sampled (``SamplingParams``) and the two stages that sample: ``evaluate`` and ``generate``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from seap_model.config.base import _Strict

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
