"""The cache stage: encode every training input once with the frozen models (read by ``training.dataset``).

* scene latents through the fitted codec (never re-encoded per step),
* every caption the fine-tune can use through the frozen text encoder (plus the empty caption for guidance),
* every reference through the frozen reference encoder (and, with ``finetune.train_encoder``, the reference
  waveforms themselves, since the encoder then changes during training),
* the training windows: crops of ``finetune.train_seconds`` around each labelled event, captioned from the
  strong labels they cover, with the references of those labels (``finetune.reference_window: outside``:
  references that share no samples with the window, ``training.window_references``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from seap_model.audio import LogMel, fit_length, load_audio
from seap_model.config import Params
from seap_model.data.manifest import SPLITS, read_labels, read_manifest
from seap_model.models.loading import load_codec, load_reference_encoder
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.text_encoder import encode_text, load_text_encoder
from seap_model.models.yamnet_encoder import YAMNetEncoder
from seap_model.progress import progress
from seap_model.training.dataset import scene_windows
from seap_model.training.window_references import outside_windows

log = logging.getLogger(__name__)


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


def uses_frames(params: Params) -> bool:
    """Whether fine-tuning reads the references' frame sequences (else only their pooled embeddings)."""
    fp = params.finetune
    return fp.style != "off" and fp.adapter.reference == "frames"


def cache(params: Params, fingerprint: Mapping[str, str]) -> dict:
    """Write the latent, text and reference caches and the window index to ``finetune.cache_dir``."""
    serst = Path(params.data.serst_dir)
    out = Path(params.finetune.cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    mel_settings = params.audio.mel()
    logmel = LogMel(mel_settings)
    codec = load_codec(params.codec.out_dir)
    encoder = load_reference_encoder(params.encoder.out_dir)
    tokenizer, text_model = load_text_encoder(params.text_encoder.name)
    captions = read_labels(serst)

    frames = mel_settings.frames(params.finetune.train_seconds)
    frames -= frames % codec.frame_multiple
    axis = codec.time_axis
    width = codec.latent_shape(frames)[axis]
    col_seconds = frames / width * mel_settings.hop_length / mel_settings.sample_rate

    caption_ids: dict[str, int] = {"": 0}
    summary: dict[str, int] = {}
    for split in SPLITS:
        scenes = read_manifest(serst / f"{split}.jsonl")
        latents, windows, ref_waves = [], [], []
        rng = np.random.default_rng((params.seed, SPLITS.index(split)))
        kinds: Counter[str] = Counter()
        for i, scene in enumerate(progress(scenes, desc=f"cache {split}", unit="scene")):
            wave = load_audio(scene.path(scene.audio), mel_settings.sample_rate)
            with torch.no_grad():
                latents.append(codec.encode(logmel(wave)[None])[0])
            total = latents[-1].shape[axis]
            if total < width:
                raise ValueError(f"{scene.path(scene.audio)}: scene is shorter than finetune.train_seconds")
            found = scene_windows(scene, i, len(ref_waves), width, total, col_seconds, captions, caption_ids)
            first = len(ref_waves)
            ref_waves += [load_audio(scene.path(r.audio), mel_settings.sample_rate) for r in scene.references]
            if params.finetune.reference_window == "outside":
                found = outside_windows(
                    scene, wave, found, first, ref_waves, col_seconds, width, mel_settings.sample_rate, rng, kinds
                )
            windows += found
        if not scenes:
            raise ValueError(f"{serst / f'{split}.jsonl'}: no scenes")
        tensors = {"latents": torch.stack(latents).contiguous()}
        tensors.update(embed_references(encoder, ref_waves, frames=uses_frames(params)))
        if params.finetune.train_encoder:  # the encoder is trained too, so it needs the references themselves
            samples = round(params.data.references.seconds * mel_settings.sample_rate)
            tensors["reference_audio"] = torch.stack([fit_length(w, samples) for w in ref_waves]).contiguous()
        save_file(tensors, str(out / f"{split}.safetensors"))
        (out / f"{split}_windows.json").write_text(
            json.dumps({"width": width, "time_axis": axis, "windows": [asdict(w) for w in windows]})
        )
        summary[f"{split}_scenes"] = len(scenes)
        summary[f"{split}_windows"] = len(windows)
        summary[f"{split}_references"] = len(ref_waves)
        log.info("%s: %d scenes, %d windows, %d references", split, len(scenes), len(windows), len(ref_waves))
        if kinds:
            summary[f"{split}_outside_references"] = dict(kinds)
            log.info("%s: references outside their window: %s", split, dict(kinds))

    texts = sorted(caption_ids, key=caption_ids.get)
    tokens, mask = encode_text(tokenizer, text_model, texts, params.text_encoder.max_length)
    save_file({"tokens": tokens.contiguous(), "mask": mask.contiguous()}, str(out / "text.safetensors"))
    (out / "captions.json").write_text(json.dumps(texts, indent=1))
    summary["captions"] = len(texts)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
