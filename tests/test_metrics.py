import numpy as np
import pytest

from seap_model.eval.metrics import (
    chance_hit_rate,
    frechet_distance,
    label_hit_rate,
    style_similarity,
    top_k_indices,
)


def _feats(n: int = 300, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_frechet_identical_sets_is_zero():
    a = _feats()
    assert abs(frechet_distance(a, a.copy())) < 1e-6


def test_frechet_shift_with_equal_covariance_is_squared_mean_difference():
    a = _feats()
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 0.25])
    assert frechet_distance(a, a + shift) == pytest.approx(shift @ shift, rel=1e-6)


def test_frechet_scaled_one_dimensional_gaussians():
    z = _feats(d=1)
    z = (z - z.mean()) / z.std(ddof=1)  # sample variance exactly 1
    # N(0, 1) vs N(0, 9): (sigma_a - sigma_b)^2 = 4
    assert frechet_distance(z, 3.0 * z) == pytest.approx(4.0, rel=1e-6)


def test_frechet_fewer_rows_than_dimensions_stays_finite():
    a = _feats(n=5, d=20)
    b = _feats(n=5, d=20, seed=1)
    assert abs(frechet_distance(a, a)) < 1e-3
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.zeros((1, 3)), np.zeros((4, 3)), "at least 2 rows"),
        (np.zeros((4, 3)), np.zeros((4, 2)), "dimensions differ"),
        (np.zeros(4), np.zeros((4, 1)), "2-D"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), np.zeros((2, 2)), "feats_a contains NaN"),
    ],
)
def test_frechet_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)


# Five classes; three labels. With k=2 the top classes are: clip 0 {a, d}, clip 1 {c, e}, clip 2 {a, b}.
CLASSES = ["a", "b", "c", "d", "e"]
TABLE = {"x": ["a"], "y": ["b", "c"], "z": ["e"]}
SCORES = np.array(
    [
        [0.9, 0.1, 0.2, 0.8, 0.0],
        [0.0, 0.1, 0.9, 0.2, 0.7],
        [0.6, 0.5, 0.1, 0.2, 0.3],
    ]
)
LABELS = ["x", "y", "z"]


def test_hit_rate_on_known_scores():
    # clip 0 (x) hits a, clip 1 (y) hits c, clip 2 (z) misses e.
    assert label_hit_rate(SCORES, LABELS, TABLE, CLASSES, k=2) == pytest.approx(2 / 3)
    assert label_hit_rate(SCORES, LABELS, TABLE, CLASSES, k=5) == 1.0


def test_chance_rate_on_known_scores():
    # Mismatched pairs: clip 0 vs y, z: 0 hits; clip 1 vs x, z: 1 (e); clip 2 vs x, y: 2 (a, b).
    assert chance_hit_rate(SCORES, LABELS, TABLE, CLASSES, k=2) == pytest.approx(3 / 6)


def test_top_k_ties_go_to_lower_index():
    assert top_k_indices(np.array([0.5, 0.5, 0.9, 0.5]), 3).tolist() == [2, 0, 1]


@pytest.mark.parametrize(
    ("scores", "labels", "table", "k", "match"),
    [
        (SCORES, ["x", "y", "w"], TABLE, 2, "not in the label table"),
        (SCORES, ["x", "y"], TABLE, 2, "3 score rows"),
        (SCORES, LABELS, {**TABLE, "x": ["nope"]}, 2, "'nope' is not a class name"),
        (SCORES, LABELS, TABLE, 0, "k must be"),
        (SCORES[:, :4], LABELS, TABLE, 2, "columns"),
        (np.where(SCORES > 0.85, np.nan, SCORES), LABELS, TABLE, 2, "NaN"),
    ],
)
def test_hit_rate_rejects_bad_input(scores, labels, table, k, match):
    with pytest.raises(ValueError, match=match):
        label_hit_rate(scores, labels, table, CLASSES, k=k)


def test_style_similarity():
    a = _feats(n=10, d=4)
    assert style_similarity(a, a) == pytest.approx(1.0)
    assert style_similarity(a, -a) == pytest.approx(-1.0)
    assert style_similarity(np.eye(2), np.eye(2)[::-1]) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.ones((3, 4)), np.ones((3, 5)), "same shape"),
        (np.ones((3, 4)), np.zeros((3, 4)), "all-zero"),
        (np.full((3, 4), np.nan), np.ones((3, 4)), "emb_a contains NaN"),
    ],
)
def test_style_similarity_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        style_similarity(a, b)
