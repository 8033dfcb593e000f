"""Writing the fine-tune cache: every training input encoded once with the frozen models, in the form
``training.dataset`` reads.

* scene latents through the fitted codec (never re-encoded per step),
* every reference through the frozen reference encoder (its frame sequences too when ``finetune.uses_frames``;
  with ``finetune.train_encoder``, the reference waveforms themselves, since the encoder then changes during
  training),
* the training windows: crops of ``finetune.train_seconds`` around each labelled event, captioned from the
  strong labels they cover, with the references of those labels (``finetune.reference_window: outside``:
  references that share no samples with the window, ``training.window_references``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from seap_model.audio import LogMel, MelSettings, fit_length, load_audio
from seap_model.config import Params
from seap_model.data.manifest import Scene
from seap_model.models.codec import KLCodec, MelPatchCodec
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.yamnet_encoder import YAMNetEncoder
from seap_model.progress import progress
from seap_model.training.dataset import Window, scene_windows
from seap_model.training.window_references import outside_windows


@torch.no_grad()
def embed_references(
    encoder: ReferenceEncoder | YAMNetEncoder, waves: list[torch.Tensor], frames: bool = False, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """``references``: embeddings (N, D); with ``frames``, ``reference_frames``: the encoder's frame sequences
    before pooling (N, T, F), stored as float16 (they are only read as attention keys). Batched where clips
    share a length (the encoder is batch-size invariant)."""
    out = {"references": torch.zeros(len(waves), encoder.config.embedding_dim)}
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        by_length.setdefault(w.numel(), []).append(i)
    if frames and len(by_length) > 1:
        raise ValueError(f"reference frames need references of one length, got {len(by_length)} lengths")
    for idx in by_length.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            batch = torch.stack([waves[i] for i in chunk])
            out["references"][chunk] = encoder(batch)
            if frames:
                rows = encoder.frames(batch).to(torch.float16)
                if "reference_frames" not in out:
                    out["reference_frames"] = torch.zeros(len(waves), *rows.shape[1:], dtype=torch.float16)
                out["reference_frames"][chunk] = rows
    return {k: v.contiguous() for k, v in out.items()}


@dataclass(frozen=True)
class WindowGrid:
    """Training windows in latent columns: ``width`` columns along ``time_axis``, each ``col_seconds`` long."""

    width: int
    time_axis: int
    col_seconds: float

    @classmethod
    def of(cls, codec: MelPatchCodec | KLCodec, mel: MelSettings, seconds: float) -> WindowGrid:
        """The grid of ``seconds``-long windows (rounded down to whole codec frames) in ``codec``'s latents."""
        frames = mel.frames(seconds)
        frames -= frames % codec.frame_multiple
        width = codec.latent_shape(frames)[codec.time_axis]
        return cls(width, codec.time_axis, frames / width * mel.hop_length / mel.sample_rate)


@dataclass
class SplitEncoding:
    """One split as the cache stores it: tensors (latents, reference embeddings ...), windows, and how many
    references of each kind ``reference_window: outside`` drew."""

    tensors: dict[str, torch.Tensor]
    windows: list[Window]
    references: int
    outside_kinds: Counter[str]


def encode_split(
    params: Params,
    scenes: list[Scene],
    what: str,
    codec: MelPatchCodec | KLCodec,
    encoder: ReferenceEncoder | YAMNetEncoder,
    grid: WindowGrid,
    captions: dict[str, str],
    caption_ids: dict[str, int],
    rng: np.random.Generator,
) -> SplitEncoding:
    """Encode ``scenes`` (one split; ``what`` names it in the progress bar) and cut their windows; captions
    new to ``caption_ids`` are numbered there."""
    mel_settings = params.audio.mel()
    logmel = LogMel(mel_settings)
    sr = mel_settings.sample_rate
    latents, windows, ref_waves = [], [], []
    kinds: Counter[str] = Counter()
    for i, scene in enumerate(progress(scenes, desc=f"cache {what}", unit="scene")):
        wave = load_audio(scene.path(scene.audio), sr)
        with torch.no_grad():
            latents.append(codec.encode(logmel(wave)[None])[0])
        total = latents[-1].shape[grid.time_axis]
        if total < grid.width:
            raise ValueError(f"{scene.path(scene.audio)}: scene is shorter than finetune.train_seconds")
        found = scene_windows(scene, i, len(ref_waves), grid.width, total, grid.col_seconds, captions, caption_ids)
        first = len(ref_waves)
        ref_waves += [load_audio(scene.path(r.audio), sr) for r in scene.references]
        if params.finetune.reference_window == "outside":
            found = outside_windows(scene, wave, found, first, ref_waves, grid.col_seconds, grid.width, sr, rng, kinds)
        windows += found
    tensors = {"latents": torch.stack(latents).contiguous()}
    tensors.update(embed_references(encoder, ref_waves, frames=params.finetune.uses_frames))
    if params.finetune.train_encoder:  # the encoder is trained too, so it needs the references themselves
        samples = round(params.data.references.seconds * sr)
        tensors["reference_audio"] = torch.stack([fit_length(w, samples) for w in ref_waves]).contiguous()
    return SplitEncoding(tensors, windows, len(ref_waves), kinds)
