"""The fine-tuning data as the cache stage writes it: per split, scene latents, reference embeddings (and
waveforms with ``finetune.train_encoder``) and the training windows; the caption tokens of every window."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from seap_model.data.manifest import Scene, window_caption


@dataclass(frozen=True)
class Window:
    """One training crop: latent columns [start, start+width), its caption and usable references."""

    scene: int
    start: int
    caption: int
    references: tuple[int, ...]


def scene_windows(
    scene: Scene,
    scene_index: int,
    first_ref: int,
    width: int,
    total: int,
    col_seconds: float,
    captions: dict[str, str],
    caption_ids: dict[str, int],
) -> list[Window]:
    """Windows of ``width`` latent columns starting just before each event onset, captioned from the strong labels.

    The scene's references are numbered ``first_ref, first_ref + 1, ...`` in manifest order.
    """
    windows: list[Window] = []
    seen: set[int] = set()
    for event in scene.events:
        start = max(0, min(round(event.onset / col_seconds) - 1, total - width))
        if start in seen:
            continue
        seen.add(start)
        caption, labels = window_caption(scene, start * col_seconds, (start + width) * col_seconds, captions)
        if not caption:
            continue
        refs = tuple(first_ref + j for j, r in enumerate(scene.references) if r.label in labels)
        if not refs:  # no reference survived for these labels: fall back to the scene's other references
            refs = tuple(range(first_ref, first_ref + len(scene.references)))
        windows.append(Window(scene_index, start, caption_ids.setdefault(caption, len(caption_ids)), refs))
    return windows


@dataclass
class SplitCache:
    """What the fine-tune stage reads for one split."""

    latents: torch.Tensor
    references: torch.Tensor
    windows: list[Window]
    width: int
    time_axis: int = -1
    reference_audio: torch.Tensor | None = None  # (N, samples), only when finetune.train_encoder
    reference_frames: torch.Tensor | None = None  # (N, T, F), only when finetune.adapter.reference is frames

    def crop(self, window: Window) -> torch.Tensor:
        """The window's latent crop (C, ., width along time)."""
        return self.latents[window.scene].narrow(self.time_axis, window.start, self.width)

    def reference_rows(self, ids: list[int]) -> dict[str, torch.Tensor]:
        """Embeddings (and waveforms and frames, when cached) of references ``ids``; id -1 (none) gives zeros."""
        rows = {"reference": self.references}
        if self.reference_audio is not None:
            rows["reference_audio"] = self.reference_audio
        if self.reference_frames is not None:
            rows["reference_frames"] = self.reference_frames
        index = torch.tensor(ids, dtype=torch.long)
        present = index >= 0
        return {k: v[index.clamp_min(0)].float() * present.view(-1, *[1] * (v.dim() - 1)) for k, v in rows.items()}


def load_split(cache_dir: str | Path, split: str) -> SplitCache:
    cache_dir = Path(cache_dir)
    tensors = load_file(str(cache_dir / f"{split}.safetensors"))
    index = json.loads((cache_dir / f"{split}_windows.json").read_text())
    windows = [Window(w["scene"], w["start"], w["caption"], tuple(w["references"])) for w in index["windows"]]
    return SplitCache(
        tensors["latents"],
        tensors["references"],
        windows,
        index["width"],
        index.get("time_axis", -1),
        tensors.get("reference_audio"),
        tensors.get("reference_frames"),
    )


def load_text_cache(cache_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    cache_dir = Path(cache_dir)
    tensors = load_file(str(cache_dir / "text.safetensors"))
    return tensors["tokens"], tensors["mask"], json.loads((cache_dir / "captions.json").read_text())
