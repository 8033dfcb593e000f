"""How much of a real clip survives log-mel -> vocoder, judged by YAMNet (the evaluation's own judge).

For each held-out clip and each way back to a waveform: the cosine between the YAMNet embeddings of the
original and the reconstruction, whether YAMNet's top-1 class survives, whether the clip's corpus label is
still among YAMNet's top-k classes (as the evaluation's label hit), and over the whole set FAD-infinity and
KID of the reconstructions' embeddings against the originals'. ``benchmarks/vocoder.py`` runs it on the test
split for every vocoder option; the unit tests run it on tiny data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from seap_model.eval.distances import fad_infinity, kernel_distance, mean_interval
from seap_model.eval.metrics import item_hits

Reconstruct = Callable[[torch.Tensor], torch.Tensor]  # (B, samples) waveforms -> (B, samples') waveforms


@dataclass(frozen=True)
class Features:
    """YAMNet's view of a set of clips: embeddings (N, 1024) and posteriors (N, 521)."""

    embeddings: np.ndarray
    posteriors: np.ndarray


def features(evaluator, waves: np.ndarray, sample_rate: int) -> Features:
    emb = np.stack([evaluator.embedding(w, sample_rate) for w in waves])
    post = np.stack([evaluator.posteriors(w, sample_rate) for w in waves])
    return Features(emb, post)


def reconstruct_all(fn: Reconstruct, waves: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float]:
    """All reconstructions (cropped or padded to the input length) and the seconds ``fn`` took."""
    outs, seconds = [], 0.0
    for i in range(0, len(waves), batch_size):
        start = time.perf_counter()
        with torch.no_grad():
            out = fn(waves[i : i + batch_size])
        seconds += time.perf_counter() - start
        n = waves.shape[-1]
        outs.append(torch.nn.functional.pad(out, (0, max(0, n - out.shape[-1])))[..., :n])
    return torch.cat(outs), seconds


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (a zero row scores 0)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def score(
    real: Features,
    recon: Features,
    labels: Sequence[str],
    label_table: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
    top_k: int = 10,
) -> dict:
    """The per-set numbers for one reconstruction of the clips ``real`` describes (see the module docstring)."""
    cos = cosine_rows(recon.embeddings, real.embeddings)
    mean, half, _ = mean_interval(cos)
    kept = recon.posteriors.argmax(1) == real.posteriors.argmax(1)
    hits = item_hits(recon.posteriors, labels, label_table, class_names, top_k)
    return {
        "items": len(cos),
        "embedding_cosine": round(mean, 4),
        "embedding_cosine_ci95": round(half, 4),
        "top1_kept": round(float(kept.mean()), 4),
        "label_hit": round(float(hits.mean()), 4),
        "fad_inf": round(fad_infinity(real.embeddings, recon.embeddings).score, 4),
        "kid": round(kernel_distance(real.embeddings, recon.embeddings), 5),
    }
