"""Typed, validated parameters (params.yaml): one pydantic model per stage.

Every model forbids unknown keys, so a typo stops the run with a message naming the key. The sections live in
one module per concern (``base``, ``data``, ``components``, ``training``, ``sampling``); ``Params`` joins them,
and this module reads, validates and merges params files.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError, field_validator, model_validator

from seap_model.config.base import (
    DEFAULT_CLIP_SECONDS,
    DEFAULT_SAMPLING_STEPS,
    AudioParams,
    ParamsError,
    _Strict,
)
from seap_model.config.components import (
    AdapterParams,
    CodecParams,
    EncoderParams,
    TextEncoderParams,
    UNetParams,
    VocoderParams,
)
from seap_model.config.data import (
    AudioSetStrongSource,
    DataParams,
    HttpSource,
    LocalSource,
    ReferenceParams,
    S3Source,
    SceneParams,
    ShippedSource,
    SourceParams,
    SplitParams,
)
from seap_model.config.sampling import (
    PRECISIONS,
    PROTOCOLS,
    SCHEDULERS,
    EvaluateParams,
    GenerateParams,
    SamplingParams,
)
from seap_model.config.training import DistillParams, FinetuneParams

__all__ = [
    "DEFAULT_CLIP_SECONDS",
    "DEFAULT_SAMPLING_STEPS",
    "PRECISIONS",
    "PROTOCOLS",
    "SCHEDULERS",
    "AdapterParams",
    "AudioParams",
    "AudioSetStrongSource",
    "CodecParams",
    "DataParams",
    "DistillParams",
    "EncoderParams",
    "EvaluateParams",
    "FinetuneParams",
    "GenerateParams",
    "HttpSource",
    "LocalSource",
    "Params",
    "ParamsError",
    "ReferenceParams",
    "S3Source",
    "SamplingParams",
    "SceneParams",
    "ShippedSource",
    "SourceParams",
    "SplitParams",
    "TextEncoderParams",
    "UNetParams",
    "VocoderParams",
    "load_params",
    "load_yaml_mapping",
    "merge_params",
    "parse_params",
]


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
