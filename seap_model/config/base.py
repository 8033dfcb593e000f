"""What every parameter section shares: strict frozen models, the error that names a bad key, the defaults
other sections refer to, and the audio front end every stage reads."""

from __future__ import annotations

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

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
