"""The ``data`` section: where the corpus comes from (shipped, a local/HTTP/S3 manifest, AudioSet-strong),
its splits, the scenes composed from it and the energy filter of its 2 s references."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from seap_model.config.base import _Strict


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
