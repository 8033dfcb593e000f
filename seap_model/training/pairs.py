"""Reference crops for encoder pretraining: the references of some splits, their source groups, and batches of
two augmented crops per source (so crops of one recording are positives, never negatives)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seap_model.audio import AudioError, fit_length, load_audio
from seap_model.config import Params
from seap_model.data.manifest import Scene, read_manifest
from seap_model.models.reference import check_reference

log = logging.getLogger(__name__)

GAIN_DB = (-6.0, 6.0)
NOISE_PROB, NOISE_SNR_DB = 0.5, (5.0, 30.0)
BACKGROUND_PROB, BACKGROUND_SNR_DB = 0.5, (5.0, 20.0)


@dataclass
class References:
    """Reference clips of some splits: waves [N, samples], label index, source group and scene per clip."""

    waves: Tensor
    labels: Tensor
    groups: Tensor
    scenes: list[str]
    splits: list[str]

    def spread(self, count: int | None) -> References:
        """``count`` of the clips spread evenly over the set (all of them when ``count`` is None or larger)."""
        if count is None or count >= len(self.waves):
            return self
        idx = np.unique(np.linspace(0, len(self.waves) - 1, count).round().astype(int)).tolist()
        keep = torch.tensor(idx)
        return References(
            self.waves[keep],
            self.labels[keep],
            self.groups[keep],
            [self.scenes[i] for i in idx],
            [self.splits[i] for i in idx],
        )


def _sources(scene: Scene, label: str, spans: list[tuple[float, float]]) -> set[str]:
    """Event sources of ``label`` in ``scene`` that overlap the reference's spans."""
    return {
        e.source for e in scene.events if e.label == label and any(e.onset < off and on < e.offset for on, off in spans)
    }


def _group_ids(keys: list[set[str]]) -> list[int]:
    """Connected components of items linked by a shared key (union-find); items without keys stand alone."""
    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, ks in enumerate(keys):
        for k in ks:
            if k in owner:
                parent[find(i)] = find(owner[k])
            else:
                owner[k] = i
    roots = [find(i) for i in range(len(keys))]
    index = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return [index[r] for r in roots]


def load_references(serst_dir: Path, splits: tuple[str, ...], labels: list[str], params: Params) -> References:
    """Read the reference WAVs of ``splits``; skip (with a warning) clips the encoder would reject."""
    sr = params.audio.sample_rate
    samples = round(params.data.references.seconds * sr)
    label_index = {label: i for i, label in enumerate(labels)}
    waves, ys, keys, scenes, split_of = [], [], [], [], []
    for split in splits:
        for scene in read_manifest(serst_dir / f"{split}.jsonl"):
            for ref in scene.references:
                try:
                    wave = fit_length(load_audio(scene.path(ref.audio), sr), samples)
                    check_reference(wave, sr)
                except AudioError as err:
                    log.warning("skipping reference %s: %s", ref.audio, err)
                    continue
                waves.append(wave)
                ys.append(label_index[ref.label])
                keys.append(_sources(scene, ref.label, ref.spans) or {f"{scene.id}/{ref.label}"})
                scenes.append(scene.id)
                split_of.append(split)
    if not waves:
        raise AudioError(f"{serst_dir}: no usable reference clips in splits {splits}")
    return References(torch.stack(waves), torch.tensor(ys), torch.tensor(_group_ids(keys)), scenes, split_of)


def _rms(x: Tensor) -> Tensor:
    return x.pow(2).mean(dim=-1, keepdim=True).sqrt()


class PairSampler:
    """Draws batches of two augmented random crops from each of ``n`` distinct source groups."""

    def __init__(self, refs: References, crop: int, generator: torch.Generator):
        self.refs, self.crop, self.gen = refs, crop, generator
        self.members = [torch.nonzero(refs.groups == g).flatten() for g in range(int(refs.groups.max()) + 1)]

    def _pick(self, members: Tensor, k: int) -> Tensor:
        return members[torch.randint(len(members), (k,), generator=self.gen)]

    def _crops(self, index: Tensor) -> Tensor:
        waves = self.refs.waves[index]
        room = max(waves.shape[-1] - self.crop, 0)
        starts = torch.randint(room + 1, (len(index),), generator=self.gen)
        return torch.stack([fit_length(w[s : s + self.crop], self.crop) for w, s in zip(waves, starts.tolist())])

    def _uniform(self, low_high: tuple[float, float], n: int) -> Tensor:
        low, high = low_high
        return low + (high - low) * torch.rand(n, generator=self.gen)

    def _mix(self, x: Tensor, noise: Tensor, snr_db: Tensor, prob: float) -> Tensor:
        scale = _rms(x) / (_rms(noise).clamp_min(1e-8) * 10 ** (snr_db[:, None] / 20))
        use = (torch.rand(len(x), generator=self.gen) < prob).float()[:, None]
        return x + use * scale * noise

    def augment(self, x: Tensor) -> Tensor:
        """Additive white noise and another clip as background, each at a random SNR, then a random gain."""
        n = len(x)
        x = self._mix(x, torch.randn(x.shape, generator=self.gen), self._uniform(NOISE_SNR_DB, n), NOISE_PROB)
        background = self._crops(torch.randint(len(self.refs.waves), (n,), generator=self.gen))
        x = self._mix(x, background, self._uniform(BACKGROUND_SNR_DB, n), BACKGROUND_PROB)
        return x * 10 ** (self._uniform(GAIN_DB, n)[:, None] / 20)

    def draw(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """Crops [2n, samples] ordered (a_1..a_n, b_1..b_n), the label of each source [n], and the
        reference each crop was cut from [2n]."""
        groups = torch.randperm(len(self.members), generator=self.gen)[:n]
        first = torch.cat([self._pick(self.members[g], 1) for g in groups.tolist()])
        second = torch.cat([self._pick(self.members[g], 1) for g in groups.tolist()])
        index = torch.cat([first, second])
        return self.augment(self._crops(index)), self.refs.labels[first], index

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        """Crops [2n, samples] ordered (a_1..a_n, b_1..b_n) and the label of each source [n]."""
        crops, labels, _ = self.draw(n)
        return crops, labels


def spec_augment(features: Tensor, freq_mask: int, time_mask: int, generator: torch.Generator) -> Tensor:
    """SpecAugment on normalised log-mels [B, 1, F, T]: one mel band of 0..freq_mask bins and one time
    span of 0..time_mask frames per crop set to 0 (the clip mean after normalisation)."""
    b, _, n_freq, n_time = features.shape
    keep = torch.ones(b, 1, n_freq, n_time, dtype=torch.bool)
    for axis, width, size in ((2, freq_mask, n_freq), (3, time_mask, n_time)):
        if width <= 0:
            continue
        w = torch.randint(min(width, size) + 1, (b,), generator=generator)
        start = (torch.rand(b, generator=generator) * (size - w + 1)).long()
        pos = torch.arange(size)
        inside = (pos >= start[:, None]) & (pos < (start + w)[:, None])
        keep &= ~(inside[:, None, :, None] if axis == 2 else inside[:, None, None, :])
    return features * keep.to(features.device, features.dtype)
