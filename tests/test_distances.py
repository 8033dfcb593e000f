"""Distribution distances and posterior divergences against closed forms and known values."""

from __future__ import annotations

import numpy as np
import pytest

from seap_model.eval.distances import fad_infinity, inception_score, kernel_distance, kl_divergence, mean_interval
from seap_model.eval.metrics import frechet_distance


def _gauss(n, d, mean=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(mean, scale, (n, d))


def test_frechet_distance_of_two_gaussians_matches_the_closed_form():
    # N(m1, s1^2 I) vs N(m2, s2^2 I): |m1-m2|^2 + d (s1 - s2)^2; large samples so the estimate is close
    a, b = _gauss(20000, 4, 0.0, 1.0, 1), _gauss(20000, 4, 0.5, 2.0, 2)
    assert frechet_distance(a, b) == pytest.approx(4 * 0.25 + 4 * 1.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fad_infinity_removes_the_small_sample_bias():
    ref, gen = _gauss(4000, 8, seed=1), _gauss(400, 8, seed=2)  # one distribution: the true FAD is 0
    plain = frechet_distance(ref, gen)
    inf = fad_infinity(ref, gen, steps=12, min_n=100, seed=0)
    assert plain > 0.05  # FAD at N=400 carries a positive bias ...
    assert abs(inf.score) < 0.5 * plain  # ... that the 1/n extrapolation largely removes
    assert inf.slope > 0 and [n for n, _ in inf.points] == sorted(n for n, _ in inf.points)
    shifted = fad_infinity(ref, gen + 1.0, steps=12, min_n=100, seed=0)
    assert shifted.score == pytest.approx(8.0, rel=0.15)  # a unit shift in 8 dims
    with pytest.raises(ValueError, match="at least 3 generated rows"):
        fad_infinity(ref, gen[:2])


@pytest.mark.parametrize("kernel", ["polynomial", "gaussian"])
def test_kernel_distances_are_near_zero_for_one_distribution_and_grow_with_a_shift(kernel):
    # Unbiased at small N: over many pairs of 40-row samples of one distribution the estimate averages to ~0.
    same = np.array([kernel_distance(_gauss(40, 16, seed=s), _gauss(40, 16, seed=100 + s), kernel) for s in range(30)])
    assert abs(same.mean()) < 3 * same.std(ddof=1) / np.sqrt(len(same))
    x, y = _gauss(40, 16, seed=1), _gauss(40, 16, seed=2)
    moved = [kernel_distance(x, y + shift, kernel) for shift in (0.5, 1.0, 2.0)]
    assert abs(same).max() < moved[0] < moved[1] < moved[2]


def test_kl_of_identical_posteriors_is_zero_and_grows_as_they_part():
    p = np.random.default_rng(0).dirichlet(np.ones(10), size=20)
    for mode in ("softmax", "sigmoid"):
        assert kl_divergence(p, p, mode) == pytest.approx(0.0, abs=1e-9)
        noisier = [kl_divergence(p, (1 - w) * p + w * np.full_like(p, 0.1), mode) for w in (0.2, 0.5, 0.9)]
        assert 0 < noisier[0] < noisier[1] < noisier[2]
    with pytest.raises(ValueError, match="probabilities"):
        kl_divergence(p, p + 1.0)
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(p, p[:5])


def test_inception_score_of_uniform_posteriors_is_one_and_of_confident_distinct_ones_the_class_count():
    assert inception_score(np.full((8, 5), 0.2)) == pytest.approx(1.0)
    assert inception_score(np.eye(5)) == pytest.approx(5.0, rel=1e-6)


def test_nan_features_are_rejected():
    bad = _gauss(10, 3)
    bad[4, 1] = np.nan
    for call in (lambda: kernel_distance(bad, _gauss(10, 3)), lambda: fad_infinity(_gauss(10, 3), bad)):
        with pytest.raises(ValueError, match="NaN"):
            call()


def test_mean_interval():
    mean, half, std = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0) and half == pytest.approx(2.484, rel=1e-3)


def test_frechet_distance_with_fewer_rows_than_dimensions_is_exact():
    # the N x N eigenproblem route (139 clips, 1024-d) against the eigenvalues of C_a C_b computed in full
    rng = np.random.default_rng(3)
    a = rng.normal(size=(60, 20)) @ rng.normal(size=(20, 200))
    b = rng.normal(size=(45, 20)) @ rng.normal(size=(20, 200)) + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    full = np.sqrt(np.clip(np.linalg.eigvals(ca @ cb).real, 0, None)).sum()
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * full
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-6)  # symmetric
    assert abs(frechet_distance(a, a)) < 1e-6 * np.trace(ca)  # a set against itself
