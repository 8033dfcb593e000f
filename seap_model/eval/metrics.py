"""Evaluation metrics: Fréchet distance, AudioSet label hit rates, style similarity.

Pure numpy/scipy functions. Every input is checked: NaN/inf, wrong shapes, unknown labels or
class names raise ValueError naming the argument instead of propagating NaN into a score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import linalg


def _finite_2d(name: str, arr: np.ndarray) -> np.ndarray:
    out = np.asarray(arr, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D].

    tr sqrt(C_a C_b) is the sum of the square roots of the eigenvalues of C_a C_b, which are those of the
    symmetric PSD matrix X_a C_b X_a^T / (N - 1) (X_a: the centred rows of ``feats_a``). With fewer rows than
    dimensions (139 clips of a 1024-d embedding) that N x N eigenproblem is exact and far cheaper than the D x D
    matrix square root, which is only used when N >= D (regularised by ``eps`` if singular, as in pytorch-fid).
    """
    a, b = _finite_2d("feats_a", feats_a), _finite_2d("feats_b", feats_b)
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"need at least 2 rows per set to fit a covariance, got {a.shape[0]} and {b.shape[0]}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    xa, xb = a - mu_a, b - mu_b
    trace_a = float((xa * xa).sum() / (len(a) - 1))
    trace_b = float((xb * xb).sum() / (len(b) - 1))
    if min(len(a), len(b)) < a.shape[1]:
        if len(b) < len(a):  # the smaller side gives the smaller eigenproblem (the trace is symmetric)
            xa, xb = xb, xa
        cross = xa @ xb.T
        k = cross @ cross.T / ((len(xa) - 1) * (len(xb) - 1))
        tr_covmean = float(np.sqrt(np.clip(linalg.eigvalsh(k), 0.0, None)).sum())
    else:
        cov_a = np.atleast_2d(np.cov(a, rowvar=False))
        cov_b = np.atleast_2d(np.cov(b, rowvar=False))
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all() or np.abs(np.imag(covmean)).max() > 1e-3:
            offset = np.eye(cov_a.shape[0]) * eps
            covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        tr_covmean = float(np.trace(covmean.real))
    diff = mu_a - mu_b
    return float(diff @ diff + trace_a + trace_b - 2.0 * tr_covmean)


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores along the last axis, best first; ties go to the lower index."""
    scores = np.asarray(scores)
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"k must be in 1..{scores.shape[-1]}, got {k}")
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


def _hit_matrix(
    scores: np.ndarray,
    labels: Sequence[str],
    table: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
    k: int,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """hits[i, j]: clip i has one of label j's class names in its top k; also each clip's label column."""
    scores = _finite_2d("scores", scores)
    if scores.shape[0] == 0:
        raise ValueError("scores has no rows")
    if scores.shape[1] != len(class_names):
        raise ValueError(f"scores has {scores.shape[1]} columns but there are {len(class_names)} class names")
    if len(labels) != scores.shape[0]:
        raise ValueError(f"{len(labels)} labels for {scores.shape[0]} score rows")
    names = list(table)
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"labels not in the label table: {unknown}")
    column = {name: j for j, name in enumerate(class_names)}
    members = np.zeros((len(names), len(class_names)), dtype=bool)
    for j, name in enumerate(names):
        for audioset_name in table[name]:
            if audioset_name not in column:
                raise ValueError(f"label {name!r}: {audioset_name!r} is not a class name")
            members[j, column[audioset_name]] = True
    in_top = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(in_top, top_k_indices(scores, k), True, axis=1)
    hits = (in_top.astype(np.int64) @ members.T.astype(np.int64)) > 0
    own = np.array([names.index(label) for label in labels])
    return hits, own, names


def item_hits(
    scores: np.ndarray,
    labels: Sequence[str],
    table: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
    k: int = 10,
) -> np.ndarray:
    """Per clip, 1.0 if its intended label has at least one of its AudioSet names in the top k, else 0.0."""
    hits, own, _ = _hit_matrix(scores, labels, table, class_names, k)
    return hits[np.arange(len(own)), own].astype(np.float64)


def label_hit_rate(
    scores: np.ndarray,
    labels: Sequence[str],
    table: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
    k: int = 10,
) -> float:
    """Fraction of clips whose intended label has at least one of its AudioSet names in the top k."""
    return float(item_hits(scores, labels, table, class_names, k).mean())


def chance_hit_rate(
    scores: np.ndarray,
    labels: Sequence[str],
    table: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
    k: int = 10,
) -> float:
    """The same hit test against every other label in the table, averaged over mismatched pairs.

    This is the rate an audio-independent label guess would reach on these clips.
    """
    hits, own, names = _hit_matrix(scores, labels, table, class_names, k)
    if len(names) < 2:
        raise ValueError("the label table needs at least 2 labels for a chance rate")
    other = np.ones(hits.shape, dtype=bool)
    other[np.arange(len(own)), own] = False
    return float(hits[other].mean())


def style_similarity(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """Mean cosine similarity of paired embedding rows [N, D]."""
    a, b = _finite_2d("emb_a", emb_a), _finite_2d("emb_b", emb_b)
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings must have the same shape, got {a.shape} and {b.shape}")
    if a.shape[0] == 0:
        raise ValueError("no embeddings to compare")
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    if (norm_a == 0).any() or (norm_b == 0).any():
        raise ValueError("cosine similarity is undefined for an all-zero embedding")
    return float(((a * b).sum(axis=1) / (norm_a * norm_b)).mean())
