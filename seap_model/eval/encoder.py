"""Scoring a reference encoder: linear-probe label accuracy, same-source EER, PCA plot of embeddings.

Used by the pretrain-encoder stage for the trained encoder and its untrained baseline alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from seap_model.audio import AudioError
from seap_model.models.reference import check_reference
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.yamnet_encoder import YAMNetEncoder


class LabelledClips(Protocol):
    """Reference clips with their label index, source group and scene (``training.pairs.References``)."""

    waves: Tensor
    labels: Tensor
    groups: Tensor
    scenes: list[str]


EMBED_BATCH = 64
PROBE_L2 = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
PROBE_FOLDS = 3
Encoder = ReferenceEncoder | YAMNetEncoder


@torch.no_grad()
def embed(encoder: Encoder, waves: Tensor, device: torch.device) -> Tensor:
    """Embeddings of already-validated clips, in eval mode, on the CPU."""
    encoder.eval()
    out = [encoder(w.to(device), validate=False).float().cpu() for w in waves.split(EMBED_BATCH)]
    return torch.cat(out)


@torch.no_grad()
def calibrate_batchnorm(encoder: ReferenceEncoder, waves: Tensor, device: torch.device) -> ReferenceEncoder:
    """Re-estimate every BatchNorm's running statistics on ``waves`` (weights untouched); eval mode after.

    An untrained encoder's running statistics are the initial 0/1, which its activations do not have;
    re-estimating them gives the untrained baseline the same normalisation a trained encoder gets."""
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    encoder.train()
    with torch.no_grad():
        for w in waves.split(EMBED_BATCH):
            encoder(w.to(device), validate=False)
    for m in norms:
        m.momentum = 0.1
    return encoder.eval()


def _fit_probe(x: Tensor, y: Tensor, n: int, l2: float) -> nn.Linear:
    """Multinomial logistic regression with an L2 penalty on the weights (LBFGS, from zeros)."""
    probe = nn.Linear(x.shape[1], n)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(probe(x), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return probe


def probe_l2(x: Tensor, y: Tensor, groups: Tensor, n: int, folds: int = PROBE_FOLDS) -> float:
    """The L2 penalty of PROBE_L2 with the best accuracy when whole source groups are held out
    (``folds``-fold cross-validation on the train embeddings only, like the held-out recordings)."""
    fold = groups % folds
    best, best_acc = PROBE_L2[0], -1.0
    for l2 in PROBE_L2:
        hits = 0
        for k in range(folds):
            fit, out = fold != k, fold == k
            probe = _fit_probe(x[fit], y[fit], n, l2)
            with torch.no_grad():
                hits += int((probe(x[out]).argmax(dim=1) == y[out]).sum())
        if hits > best_acc:
            best, best_acc = l2, hits
    return best


def linear_probe_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    n: int,
    groups: Tensor | None = None,
    l2: float = 1e-3,
) -> tuple[float, float]:
    """Accuracy on the test embeddings of an L2-regularised multinomial logistic regression fitted on the
    train embeddings, and the L2 penalty used (chosen by grouped cross-validation when ``groups`` is given).

    Features are standardised with the train statistics, so the probe does not depend on the
    embedding's scale (an untrained encoder's embeddings differ only slightly from clip to clip)."""
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-8)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    if groups is not None:
        l2 = probe_l2(train_x, train_y, groups, n)
    probe = _fit_probe(train_x, train_y, n, l2)
    with torch.no_grad():
        return float((probe(test_x).argmax(dim=1) == test_y).float().mean()), l2


def equal_error_rate(scores: np.ndarray, targets: np.ndarray) -> float:
    """EER: the operating point where false-accept and false-reject rates meet (nearest threshold)."""
    order = np.argsort(-scores, kind="stable")
    t = targets[order].astype(bool)
    far = np.concatenate([[0.0], np.cumsum(~t) / max((~t).sum(), 1)])
    frr = np.concatenate([[1.0], 1 - np.cumsum(t) / max(t.sum(), 1)])
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2)


def verification_eer(encoder: Encoder, refs: LabelledClips, device: torch.device) -> float:
    """Same-source EER: first vs second half of each reference are targets; pairs from different
    scenes and different source groups are non-targets. References with a silent/short half are skipped."""
    half = refs.waves.shape[-1] // 2
    first, second = refs.waves[:, :half], refs.waves[:, half : 2 * half]
    keep = []
    for i in range(len(refs.waves)):
        try:
            check_reference(
                torch.stack([first[i], second[i]]), encoder.config.sample_rate, min_seconds=encoder.config.min_seconds
            )
            keep.append(i)
        except AudioError:
            pass
    if len(keep) < 2:
        return float("nan")
    idx = torch.tensor(keep)
    scores = (embed(encoder, first[idx], device) @ embed(encoder, second[idx], device).T).numpy()
    groups = refs.groups[idx].numpy()
    scenes = np.array([refs.scenes[i] for i in keep])
    target = np.eye(len(keep), dtype=bool)
    nontarget = (groups[:, None] != groups[None, :]) & (scenes[:, None] != scenes[None, :])
    mask = target | nontarget
    return equal_error_rate(scores[mask], target[mask])


def evaluate(encoder: Encoder, train: LabelledClips, held: LabelledClips, n_labels: int, device: torch.device) -> dict:
    """Linear-probe label accuracy (fit on train with its L2 penalty chosen by cross-validation over train
    source groups, scored on held-out) and same-source EER on held-out."""
    train_x, held_x = embed(encoder, train.waves, device), embed(encoder, held.waves, device)
    accuracy, l2 = linear_probe_accuracy(train_x, train.labels, held_x, held.labels, n_labels, groups=train.groups)
    return {"accuracy": accuracy, "eer": verification_eer(encoder, held, device), "probe_l2": l2}


def plot_pca(embeddings: Tensor, labels: Tensor, names: list[str], path: Path) -> None:
    """Scatter of the first two principal components, one colour/marker per label."""
    x = embeddings - embeddings.mean(dim=0)
    pcs = (x @ torch.linalg.svd(x, full_matrices=False).Vh[:2].T).numpy()
    fig = Figure(figsize=(9, 6))  # a bare Figure renders with the Agg canvas, no pyplot state
    ax = fig.subplots()
    cmap, markers = matplotlib.colormaps["tab10"], "os^Dv*P"
    for k in sorted(set(labels.tolist())):
        sel = (labels == k).numpy()
        ax.scatter(*pcs[sel].T, s=14, color=cmap(k % 10), marker=markers[k // 10 % len(markers)], label=names[k])
    ax.set(xlabel="PC 1", ylabel="PC 2", title="Reference embeddings (test split)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
