"""Distribution distances between feature sets and divergences between classifier posteriors.

* ``fad_infinity``: fadtk's FAD-infinity (Gui et al. 2024): Fréchet distance of bootstrap samples of n
  generated rows against the full reference set, for n spread from ``min_n`` to N, fitted linearly in 1/n;
  the intercept (n -> infinity) removes the estimator's 1/n bias. ``fadtk`` itself is not a dependency (its
  install pulls three other audio models and downgrades numpy), so these few lines follow its definition.
* ``kernel_distance``: the unbiased MMD^2 estimator (no bias at small N, may be slightly negative): KID's
  cubic polynomial kernel (Binkowski et al. 2018) or KAD's Gaussian kernel with the median-distance
  bandwidth (kadtk, Chung et al. 2025).
* ``kl_divergence``: KL(real || generated) of paired posteriors, softmax (one distribution over classes) or
  sigmoid (independent Bernoulli per class, as AudioSet taggers output), mean over pairs.
* ``inception_score``: exp E_x KL(p(y|x) || p(y)).

Written by hand: no maintained package offers these on numpy arrays without a model stack attached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seap_model.eval.metrics import _finite_2d, frechet_distance

EPS = 1e-12


@dataclass(frozen=True)
class FadInf:
    score: float  # the extrapolated FAD at n -> infinity
    slope: float
    r2: float
    points: list[tuple[int, float]]


def fad_infinity(
    reference: np.ndarray, generated: np.ndarray, steps: int = 10, min_n: int | None = None, seed: int = 0
) -> FadInf:
    """FAD-infinity of ``generated`` [N, D] against ``reference`` [M, D] (see the module docstring)."""
    ref, gen = _finite_2d("reference", reference), _finite_2d("generated", generated)
    n_max = len(gen)
    min_n = max(2, n_max // 2 if min_n is None else min_n)
    if n_max < 3 or min_n >= n_max:
        raise ValueError(f"FAD-infinity needs at least 3 generated rows and min_n < N, got N={n_max}, min_n={min_n}")
    rng = np.random.default_rng(seed)
    ns = sorted({int(n) for n in np.linspace(min_n, n_max, steps)})
    points = [(n, frechet_distance(ref, gen[rng.choice(n_max, size=n, replace=True)])) for n in ns]
    xs, ys = 1.0 / np.array(ns, dtype=np.float64), np.array([p[1] for p in points])
    slope, intercept = np.polyfit(xs, ys, 1)
    residual = ys - (slope * xs + intercept)
    total = ((ys - ys.mean()) ** 2).sum()
    r2 = 1.0 - (residual**2).sum() / total if total > 0 else 1.0
    return FadInf(float(intercept), float(slope), float(r2), points)


def _mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m, n = len(k_xx), len(k_yy)
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * k_xy.mean())


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def kernel_distance(reference: np.ndarray, generated: np.ndarray, kernel: str = "polynomial") -> float:
    """Unbiased MMD^2 between two feature sets: ``polynomial`` (KID) or ``gaussian`` (KAD)."""
    x, y = _finite_2d("reference", reference), _finite_2d("generated", generated)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"need at least 2 rows per set, got {len(x)} and {len(y)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if kernel == "polynomial":
        d = x.shape[1]
        k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
    elif kernel == "gaussian":
        within = _sq_dists(x, x)[np.triu_indices(len(x), 1)]
        bandwidth = float(np.median(np.sqrt(within))) or 1.0  # median heuristic on the reference set
        k = lambda a, b: np.exp(-_sq_dists(a, b) / (2.0 * bandwidth**2))  # noqa: E731
    else:
        raise ValueError(f"kernel must be 'polynomial' or 'gaussian', got {kernel!r}")
    return _mmd2_unbiased(k(x, x), k(y, y), k(x, y))


def _posteriors(name: str, p: np.ndarray) -> np.ndarray:
    p = _finite_2d(name, p)
    if (p < 0).any() or (p > 1).any():
        raise ValueError(f"{name} must hold probabilities in [0, 1]")
    return p


def kl_divergence(real: np.ndarray, generated: np.ndarray, mode: str = "softmax") -> float:
    """Mean over paired rows of KL(real || generated) of classifier outputs [N, C] (probabilities).

    ``softmax``: each row is renormalised to one distribution over the classes. ``sigmoid``: each class is
    its own Bernoulli (multi-label taggers), KL summed over classes and divided by C.
    """
    p, q = _posteriors("real", real), _posteriors("generated", generated)
    if p.shape != q.shape:
        raise ValueError(f"paired posteriors must have the same shape, got {p.shape} and {q.shape}")
    p, q = np.clip(p, EPS, 1.0), np.clip(q, EPS, 1.0)
    if mode == "softmax":
        p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
        return float((p * np.log(p / q)).sum(1).mean())
    if mode == "sigmoid":
        p1, q1 = np.clip(1.0 - p, EPS, 1.0), np.clip(1.0 - q, EPS, 1.0)
        return float((p * np.log(p / q) + p1 * np.log(p1 / q1)).mean())
    raise ValueError(f"mode must be 'softmax' or 'sigmoid', got {mode!r}")


def inception_score(posteriors: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of rows renormalised to distributions over the classes."""
    p = np.clip(_posteriors("posteriors", posteriors), EPS, 1.0)
    p = p / p.sum(1, keepdims=True)
    marginal = p.mean(0, keepdims=True)
    return float(np.exp((p * np.log(p / marginal)).sum(1).mean()))


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and a Student-t confidence interval (half-width) of independent values (e.g. per seed), and std."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0 or not np.isfinite(v).all():
        raise ValueError(f"need a non-empty 1-D list of finite values, got {values!r}")
    if len(v) == 1:
        return float(v[0]), float("nan"), float("nan")
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * std / np.sqrt(len(v)))
    return float(v.mean()), half, std
