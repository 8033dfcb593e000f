"""Pretraining stage for the H/ASP reference encoder on the SERST reference clips.

Training follows clova's speaker-verification recipe: each step takes ``batch_size // 2`` sources
with two augmented random crops each and minimises AM-softmax over event labels plus the angular
prototypical loss over the crop pairs. A "source" is a set of references that share a source
recording (an event ``source`` of the reference's label), so crops of one reference, and of references
cut from the same recording in other scenes, are positives and never appear as negatives.
Optional extras (off by default; measured no clear gain on the embedded corpus): SpecAugment masks
(``freq_mask``/``time_mask``) and a cosine loss to frozen YAMNet's embedding (``distill_weight``).

With ``encoder.type: yamnet`` nothing is trained: the frozen YAMNet encoder is centred on the training
references, exported and scored the same way.

Evaluation, on the val+test references (other recordings than train): label accuracy of a linear
probe fitted on the train embeddings, its L2 penalty chosen by cross-validation over train source
groups (so neither encoder is scored with a penalty that suits only the other), and the same-source
EER; both next to an untrained H/ASP encoder of the same shape and initial weights. That baseline
keeps its initial BatchNorm statistics: re-estimating them on the train references made it worse
(accuracy 0.28 -> 0.20, EER 0.09 -> 0.24, two seeds), so the stronger variant is the one reported.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from torch import Tensor, nn
from tqdm import tqdm

from seap_model.audio import AudioError, fit_length, load_audio
from seap_model.config import Params
from seap_model.data.manifest import Scene, read_labels, read_manifest
from seap_model.encoder_eval import embed, evaluate, plot_pca
from seap_model.models.reference_encoder import ReferenceEncoder, check_reference
from seap_model.models.yamnet_encoder import YAMNetEncoder

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


class SoftmaxProtoLoss(nn.Module):
    """AM-softmax over labels plus ``proto_weight`` x angular prototypical loss over crop pairs
    (clova 'softmaxproto')."""

    def __init__(
        self, embedding_dim: int, n_labels: int, margin: float = 0.2, scale: float = 30.0, proto_weight: float = 1.0
    ):
        super().__init__()
        self.margin, self.scale, self.proto_weight = margin, scale, proto_weight
        self.classes = nn.Parameter(torch.randn(n_labels, embedding_dim) * 0.01)
        self.w = nn.Parameter(torch.tensor(10.0))
        self.b = nn.Parameter(torch.tensor(-5.0))

    def forward(self, a: Tensor, b: Tensor, labels: Tensor) -> Tensor:
        z = torch.cat([a, b])
        cos = z @ nn.functional.normalize(self.classes, dim=-1).T
        margin = self.margin * nn.functional.one_hot(labels.repeat(2), cos.shape[1])
        am_softmax = nn.functional.cross_entropy(self.scale * (cos - margin), labels.repeat(2))
        if self.proto_weight == 0:
            return am_softmax
        sim = self.w.clamp_min(1e-6) * (a @ b.T) + self.b
        proto = nn.functional.cross_entropy(sim, torch.arange(len(a), device=a.device))
        return am_softmax + self.proto_weight * proto


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


def build_encoder(params: Params) -> ReferenceEncoder:
    """An untrained H/ASP encoder of the configured shape."""
    enc = params.encoder
    return ReferenceEncoder(
        **params.audio.model_dump(),
        channels=enc.channels,
        layers=enc.layers,
        embedding_dim=enc.embedding_dim,
        min_seconds=enc.min_seconds,
        pad_short=enc.pad_short,
    )


def build_yamnet(params: Params, train: References) -> YAMNetEncoder:
    """The frozen YAMNet encoder, centred on the training references (nothing else is fitted)."""
    enc = params.encoder
    encoder = YAMNetEncoder(
        params.audio.sample_rate, pooling=enc.yamnet_pooling, min_seconds=enc.min_seconds, pad_short=enc.pad_short
    )
    encoder.fit_center(train.waves)
    return encoder.eval()


def train_hasp(
    params: Params, train: References, n_labels: int, device: torch.device
) -> tuple[ReferenceEncoder, list[float]]:
    """Train an H/ASP encoder (initialised like ``build_encoder`` after ``torch.manual_seed(seed)``);
    return it in eval mode and the loss of every step."""
    enc = params.encoder
    n_pairs = min(enc.batch_size // 2, len(train.groups.unique()))
    torch.manual_seed(params.seed)
    encoder = build_encoder(params).to(device)
    criterion = SoftmaxProtoLoss(enc.embedding_dim, n_labels, enc.am_margin, enc.am_scale, enc.proto_weight).to(device)
    generator = torch.Generator().manual_seed(params.seed)
    sampler = PairSampler(train, round(enc.crop_seconds * params.audio.sample_rate), generator)
    teacher, head = None, nn.Identity()
    if enc.distill_weight > 0:  # the frozen YAMNet encoder's embedding of each training reference
        teacher = embed(build_yamnet(params, train), train.waves, device).to(device)
        head = nn.Linear(enc.embedding_dim, teacher.shape[1]).to(device)
    opt = torch.optim.AdamW([*encoder.parameters(), *criterion.parameters(), *head.parameters()], lr=enc.lr)
    schedule = get_cosine_schedule_with_warmup(opt, max(enc.steps // 20, 1), enc.steps)
    log.info(
        "encoder: %.2f M parameters on %s, %d pairs/step",
        sum(p.numel() for p in encoder.parameters()) / 1e6,
        device,
        n_pairs,
    )
    losses: list[float] = []
    encoder.train()
    bar = tqdm(range(enc.steps), desc="encoder", unit="step")
    for _ in bar:
        crops, y, index = sampler.draw(n_pairs)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            features = spec_augment(encoder.features(crops.to(device)), enc.freq_mask, enc.time_mask, generator)
            z = encoder.embed_features(features)
        loss = criterion(*z.float().chunk(2), y.to(device))
        if teacher is not None:
            agree = nn.functional.cosine_similarity(head(z.float()), teacher[index.to(device)], dim=-1)
            loss = loss + enc.distill_weight * (1 - agree).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError("encoder training diverged (non-finite loss); lower encoder.lr")
    return encoder.eval(), losses


def pretrain_encoder(params: Params) -> dict:
    """Train (type hasp) or set up (type yamnet) the reference encoder and save it to ``encoder.out_dir``;
    write metrics.json, loss.csv and embeddings_pca.png to ``encoder.report_dir``; return the metrics.

    Both types are scored the same way on the val+test references, next to an untrained H/ASP
    encoder of the configured shape (the ``untrained_*`` metrics)."""
    enc = params.encoder
    serst_dir, out_dir, report_dir = Path(params.data.serst_dir), Path(enc.out_dir), Path(enc.report_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stage_start = time.perf_counter()
    labels = list(read_labels(serst_dir))
    train = load_references(serst_dir, ("train",), labels, params)
    held = load_references(serst_dir, ("val", "test"), labels, params)
    log.info(
        "encoder (%s): %d train references (%d source groups), %d val+test",
        enc.type,
        len(train.waves),
        len(train.groups.unique()),
        len(held.waves),
    )

    start = time.perf_counter()
    if enc.type == "yamnet":
        encoder, losses = build_yamnet(params, train), []
    else:
        encoder, losses = train_hasp(params, train, len(labels), device)
    seconds = time.perf_counter() - start
    torch.manual_seed(params.seed)
    untrained = build_encoder(params).to(device)  # the same initial weights train_hasp started from

    trained_metrics = evaluate(encoder, train, held, len(labels), device)
    untrained_metrics = evaluate(untrained, train, held, len(labels), device)
    tail = losses[-max(1, min(20, len(losses))) :]
    metrics = {
        **trained_metrics,
        **{f"untrained_{k}": v for k, v in untrained_metrics.items()},
        "final_loss": float(np.mean(tail)) if tail else 0.0,
        "steps": enc.steps if enc.type == "hasp" else 0,
        "seconds": round(seconds, 1),
        "train_references": len(train.waves),
        "eval_references": len(held.waves),
        "embedding_dim": int(encoder.config.embedding_dim),
    }

    encoder.to("cpu").save_pretrained(out_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    with open(report_dir / "loss.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss"])
        writer.writerows((i + 1, f"{v:.6f}") for i, v in enumerate(losses))
    test = torch.tensor([s == "test" for s in held.splits])
    shown = test if test.any() else torch.ones_like(test)
    plot_pca(
        embed(encoder, held.waves[shown], torch.device("cpu")),
        held.labels[shown],
        labels,
        report_dir / "embeddings_pca.png",
    )
    metrics["stage_seconds"] = round(time.perf_counter() - stage_start, 1)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info(
        "encoder (%s): accuracy %.3f (untrained H/ASP %.3f), EER %.3f (untrained %.3f); %.0f s training, %.0f s stage",
        enc.type,
        metrics["accuracy"],
        metrics["untrained_accuracy"],
        metrics["eer"],
        metrics["untrained_eer"],
        seconds,
        metrics["stage_seconds"],
    )
    return metrics
