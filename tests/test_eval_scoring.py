"""Scoring, secondary studies and the seed-aggregated summary of an evaluation (seap_model/eval/scoring.py,
studies.py, summary.py), on tiny fake evaluators and synthetic feature vectors."""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import stats

from seap_model.audio import LogMel, MelSettings
from seap_model.eval.feature_cache import FeatureCache
from seap_model.eval.protocols import spread_indices
from seap_model.eval.scoring import (
    Backends,
    ClipSet,
    by_category,
    cosine,
    distribution_metrics,
    featurise,
    follow_difference,
    log_mel_distance,
    per_item,
)
from seap_model.eval.studies import (
    conflict,
    memorisation,
    reference_ratio,
    spread,
    training_crops,
)
from seap_model.eval.summary import Tables

CLASS_NAMES = ["Bell", "Church bell", "Dog", "Bark", "Rain", "Speech"]
LABEL_TABLE = {"bell": ["Bell", "Church bell"], "dog": ["Dog", "Bark"], "rain": ["Rain"]}
COLUMN = {name: j for j, name in enumerate(CLASS_NAMES)}


class FakeEvaluator:
    """The evaluator interface scoring uses: name, version, sample_rate, posteriors(), embedding()."""

    def __init__(self, name: str, dim: int = 4, classes: int = len(CLASS_NAMES)):
        self.name, self.version, self.sample_rate = name, "fake-1", 16000
        self.dim, self.classes, self.calls = dim, classes, 0

    def embedding(self, wave, sample_rate):
        self.calls += 1
        w = np.asarray(wave, dtype=np.float64)
        return np.array([w[i :: self.dim].sum() for i in range(self.dim)], dtype=np.float32)

    def posteriors(self, wave, sample_rate):
        self.calls += 1
        w = np.abs(np.asarray(wave, dtype=np.float64))
        return (np.array([w[i :: self.classes].mean() for i in range(self.classes)]) / (w.max() + 1e-9)).astype(
            np.float32
        )


def backends(top_k: int = 1, extra: tuple = ()) -> Backends:
    yam = FakeEvaluator("yamnet")
    return Backends(yamnet=yam, style=yam, extra=extra, class_names=CLASS_NAMES, label_table=LABEL_TABLE, top_k=top_k)


def one_hot_posteriors(class_names: list[str]) -> np.ndarray:
    """Posterior rows whose top class is the given AudioSet class name."""
    p = np.full((len(class_names), len(CLASS_NAMES)), 0.01)
    for i, name in enumerate(class_names):
        p[i, COLUMN[name]] = 0.9
    return p


# ---------------------------------------------------------------- cosine / follow difference


def test_cosine_of_identical_rows_is_one_and_of_a_zero_row_is_zero():
    a = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    b = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division-by-zero warning for the silent clip
        got = cosine(a, b)
    np.testing.assert_allclose(got, [1.0, 0.0, -1.0, 0.0], atol=1e-12)
    assert cosine(np.zeros((2, 3)), np.zeros((2, 3))).tolist() == [0.0, 0.0]
    np.testing.assert_allclose(cosine(a[:1] * 7.0, b[:1]), [1.0])  # scale-free


def test_follow_difference_is_positive_when_outputs_match_their_own_reference():
    rng = np.random.default_rng(0)
    own = rng.normal(size=(5, 16))
    others = [-own[i] + 0.05 * rng.normal(size=(3, 16)) for i in range(5)]  # far from own
    diff = follow_difference(own.copy(), own, others)
    assert diff.shape == (5,)
    assert (diff > 1.0).all()  # ~ 1 - (-1)


def test_follow_difference_is_zero_when_own_and_others_are_the_same_vectors():
    rng = np.random.default_rng(1)
    out, own = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    others = [np.stack([own[i]] * 3) for i in range(4)]
    np.testing.assert_allclose(follow_difference(out, own, others), 0.0, atol=1e-12)


def test_follow_difference_is_negative_when_outputs_are_nearer_the_other_recordings():
    rng = np.random.default_rng(2)
    own = rng.normal(size=(4, 8))
    others = [rng.normal(size=(2, 8)) for _ in range(4)]
    out = np.stack([o.mean(0) for o in others])  # exactly between the other references
    assert (follow_difference(out, own, others) < 0).all()


def test_follow_difference_takes_the_mean_over_a_varying_number_of_other_references():
    out = np.array([[1.0, 0.0], [1.0, 0.0]])
    own = np.array([[1.0, 0.0], [0.0, 1.0]])
    others = [np.array([[0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])]
    np.testing.assert_allclose(follow_difference(out, own, others), [1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError):
        follow_difference(out, own, others[:1])  # one list of others per item


# ---------------------------------------------------------------- by_category / log-mel distance


def test_by_category_counts_items_and_averages_per_label():
    labels = ["dog", "rain", "dog", "bell", "dog"]
    values = {"hit": np.array([1.0, 0.0, 0.0, 1.0, 1.0]), "style": np.array([0.3, 0.5, 0.6, 0.1, 0.9])}
    got = by_category(values, labels)
    assert list(got) == ["bell", "dog", "rain"]
    assert {k: v["items"] for k, v in got.items()} == {"bell": 1, "dog": 3, "rain": 1}
    assert got["dog"]["hit"] == pytest.approx(2 / 3)
    assert got["dog"]["style"] == pytest.approx(0.6)
    assert got["rain"] == {"items": 1, "hit": 0.0, "style": 0.5}
    json.dumps(got)  # plain floats and ints


def test_log_mel_distance_is_zero_for_identical_and_the_rms_difference_otherwise():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3, 8, 10))
    np.testing.assert_array_equal(log_mel_distance(a, a.copy()), np.zeros(3))
    b = a.copy()
    b[1] += 2.0
    b[2, :4] -= 1.0  # half of the bins
    np.testing.assert_allclose(log_mel_distance(a, b), [0.0, 2.0, np.sqrt(0.5)])


# ---------------------------------------------------------------- distribution metrics / per item


def clipset(embedding: np.ndarray, posteriors: np.ndarray, names=("yamnet",), taggers=("yamnet",)) -> ClipSet:
    return ClipSet({n: embedding for n in names}, {n: posteriors for n in taggers}, embedding)


def test_distribution_metrics_keys_per_embedding_backend_and_tagger():
    rng = np.random.default_rng(4)
    emb, post = rng.normal(size=(12, 4)), rng.uniform(0.01, 0.99, size=(12, 5))
    names, taggers = ("yamnet", "vggish", "panns"), ("yamnet", "panns")
    got = distribution_metrics(clipset(emb, post, names, taggers), clipset(emb + 0.1, post, names, taggers))
    expected = {f"{m}_{n}" for n in names for m in ("fd", "fad_inf", "kid", "kad")}
    expected |= {f"{m}_{n}" for n in taggers for m in ("kl_softmax", "kl_sigmoid", "is")}
    assert set(got) == expected
    assert all(isinstance(v, float) and np.isfinite(v) for v in got.values())
    assert got["kl_softmax_yamnet"] == pytest.approx(0.0, abs=1e-12)  # same posteriors, paired
    assert got["kl_sigmoid_panns"] == pytest.approx(0.0, abs=1e-12)


def test_distribution_metrics_grow_with_a_shift_and_are_near_zero_for_the_same_gaussian():
    rng = np.random.default_rng(5)
    n, d = 120, 6
    real_emb = rng.normal(size=(n, d))
    post = rng.dirichlet(np.ones(5), size=n)
    real = clipset(real_emb, post)
    fresh = rng.normal(size=(n, d))  # the same draw shifted, so only the shift changes
    rows = [distribution_metrics(clipset(fresh + shift, post), real) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert abs(rows[0]["kid_yamnet"]) < 0.1
    assert abs(rows[0]["kad_yamnet"]) < 0.01
    for key in ("fd_yamnet", "fad_inf_yamnet", "kid_yamnet", "kad_yamnet"):
        values = [r[key] for r in rows]
        assert values == sorted(values) and values[0] < values[-1], (key, values)
    assert rows[-1]["kid_yamnet"] > 10 * abs(rows[0]["kid_yamnet"])
    assert rows[-1]["kad_yamnet"] > 10 * abs(rows[0]["kad_yamnet"])


def test_per_item_scores_hits_style_target_similarity_and_kl():
    b = backends(top_k=1)
    labels = ["dog", "bell", "rain"]
    gen_post = one_hot_posteriors(["Bark", "Rain", "Rain"])  # dog hit, bell miss, rain hit
    real_post = one_hot_posteriors(["Dog", "Bell", "Rain"])
    style = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    generated = ClipSet({"yamnet": style}, {"yamnet": gen_post}, style)
    real = ClipSet({"yamnet": style}, {"yamnet": real_post}, np.array([[1.0, 0.0], [0.0, -1.0], [0.0, 0.0]]))
    references = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 2.0]])
    got = per_item(b, generated, real, references, labels)
    assert set(got) == {"hit", "style", "target_similarity", "kl_softmax"}
    np.testing.assert_array_equal(got["hit"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(got["style"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(got["target_similarity"], [1.0, -1.0, 0.0])  # silent target: 0
    assert got["kl_softmax"][2] == pytest.approx(0.0, abs=1e-12)
    assert (got["kl_softmax"][:2] > 0.1).all()


def test_backends_hits_and_chance():
    b = backends(top_k=1)
    post = one_hot_posteriors(["Dog", "Bell", "Speech"])
    np.testing.assert_array_equal(b.hits(post, ["dog", "bell", "rain"]), [1.0, 1.0, 0.0])
    clips = ClipSet({}, {"yamnet": post}, np.zeros((3, 2)))
    # mismatched pairs: (0, bell), (0, rain), (1, dog), (1, rain), (2, bell), (2, dog): none hits
    assert b.chance(clips, ["dog", "bell", "rain"]) == 0.0
    b2 = backends(top_k=3)
    assert b2.chance(clips, ["dog", "bell", "rain"]) > 0.0


def test_taggers_are_yamnet_and_panns_embedders_every_backend():
    vggish, panns, clap = FakeEvaluator("vggish"), FakeEvaluator("panns"), FakeEvaluator("clap")
    b = backends(extra=(vggish, panns, clap))
    assert [e.name for e in b.embedders] == ["yamnet", "vggish", "panns", "clap"]
    assert [e.name for e in b.taggers] == ["yamnet", "panns"]


def test_featurise_rows_follow_the_waves_and_use_the_cache(tmp_path):
    vggish, panns = FakeEvaluator("vggish", dim=3), FakeEvaluator("panns")
    b = backends(extra=(vggish, panns))
    rng = np.random.default_rng(6)
    waves = [rng.normal(size=240).astype(np.float32) for _ in range(3)]
    cache = FeatureCache(tmp_path / "cache")
    clips = featurise(b, cache, waves, 16000)
    assert set(clips.embedding) == {"yamnet", "vggish", "panns"}
    assert set(clips.posteriors) == {"yamnet", "panns"}
    assert clips.embedding["vggish"].shape == (3, 3)
    assert clips.posteriors["yamnet"].shape == (3, len(CLASS_NAMES))
    np.testing.assert_allclose(clips.embedding["yamnet"][1], b.yamnet.embedding(waves[1], 16000), rtol=1e-6)
    np.testing.assert_array_equal(clips.style, clips.embedding["yamnet"])
    calls = vggish.calls
    again = featurise(b, cache, waves, 16000)
    assert vggish.calls == calls  # from the cache
    np.testing.assert_array_equal(again.embedding["vggish"], clips.embedding["vggish"])


# ---------------------------------------------------------------- studies


def test_memorisation_flags_a_system_whose_clips_are_training_crops():
    rng = np.random.default_rng(7)
    train = rng.normal(size=(200, 16))
    real = rng.normal(size=(60, 16))
    copies = train[rng.choice(200, size=60, replace=False)] * 3.0  # scaled copies: cosine distance 0
    fresh = rng.normal(size=(60, 16))
    got = memorisation(train, real, {"seap": copies, "text_only": fresh})
    assert got["training_crops"] == 200
    assert got["real"]["items"] == 60 and got["real"]["p05"] > 0
    assert got["seap"]["below_real_p05"] == pytest.approx(1.0)
    assert got["seap"]["median"] == pytest.approx(0.0, abs=1e-9)
    assert got["text_only"]["below_real_p05"] < 0.3
    assert got["text_only"]["median"] > 0.1
    assert got["seap"]["median"] < got["real"]["median"]
    json.dumps(got)


WAVE_SECONDS = 0.25


def waves(seed: int, count: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.1, size=int(16000 * WAVE_SECONDS)).astype(np.float32) for _ in range(count)]


def projection_feats(clips: list) -> ClipSet:
    """A deterministic stand-in for an evaluator: style = a fixed random projection of the waveform."""
    x = np.stack([np.asarray(c, dtype=np.float64) for c in clips])
    proj = np.random.default_rng(123).normal(size=(x.shape[1], 8))
    style = x @ proj
    return ClipSet({"yamnet": style}, {}, style)


def test_reference_ratio_is_zero_for_no_change_and_about_one_for_a_change_as_large_as_the_seed():
    logmel = LogMel(MelSettings())
    first, second, third = waves(0), waves(1), waves(2)
    same = [w.copy() for w in first]
    got = reference_ratio(
        first, second, {"nothing": same, "seed-sized": third, "second": second}, logmel, projection_feats
    )
    assert got["items"] == 6
    assert got["seed_distance_log_mel"] > 0
    assert got["nothing"]["distance_log_mel"] == pytest.approx(0.0, abs=1e-9)
    assert got["nothing"]["ratio_log_mel"] == pytest.approx(0.0, abs=1e-6)
    assert got["nothing"]["ratio_style"] == pytest.approx(0.0, abs=1e-6)
    assert got["second"]["ratio_log_mel"] == pytest.approx(1.0)
    assert got["second"]["ratio_style"] == pytest.approx(1.0)
    assert got["seed-sized"]["ratio_log_mel"] == pytest.approx(1.0, abs=0.25)
    assert got["seed-sized"]["ratio_style"] == pytest.approx(1.0, abs=0.5)
    json.dumps(got)


def test_reference_ratio_without_a_second_seed_gives_distances_only():
    logmel = LogMel(MelSettings())
    first, other = waves(0, 3), waves(1, 3)
    got = reference_ratio(first, None, {"swap": other}, logmel, projection_feats)
    assert "seed_distance_log_mel" not in got
    assert set(got["swap"]) == {"distance_log_mel"}
    assert got["swap"]["distance_log_mel"] > 0


def test_conflict_counts_prompt_and_reference_label_hits_separately():
    b = backends(top_k=1)
    prompts = ["dog", "dog", "bell", "rain"]
    references = ["bell", "rain", "dog", "bell"]
    # SEAP follows the reference in 3 of 4 items and the prompt in 1; the baseline always follows the prompt
    generated = ClipSet({}, {"yamnet": one_hot_posteriors(["Bell", "Rain", "Dog", "Rain"])}, np.zeros((4, 2)))
    baseline = ClipSet({}, {"yamnet": one_hot_posteriors(["Dog", "Bark", "Church bell", "Rain"])}, np.zeros((4, 2)))
    got = conflict(b, generated, baseline, prompts, references)
    assert got == {
        "items": 4,
        "seap": {"prompt_label_hit": 0.25, "reference_label_hit": 0.75},
        "without_reference": {"prompt_label_hit": 1.0, "reference_label_hit": 0.0},
    }


def test_spread_indices_spread_over_the_split_and_dedup():
    assert spread_indices(10, 4) == [0, 3, 6, 9]
    assert spread_indices(3, 10) == [0, 1, 2]  # never more than there are
    assert spread_indices(7, 1) == [0]
    assert spread_indices(0, 5) == []
    for count, wanted in ((5, 5), (100, 7), (9, 8), (1, 3)):
        got = spread_indices(count, wanted)
        assert got == sorted(set(got)) and len(got) == min(count, wanted)
        assert got[0] == 0 and got[-1] == count - 1 and all(0 <= i < count for i in got)


def test_spread_is_mean_and_sample_std():
    assert spread([0.7]) == (0.7, 0.0)
    mean, std = spread([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert std == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))


def test_training_crops_are_fixed_seed_crops_of_training_scenes(tmp_path):
    rng = np.random.default_rng(8)
    sr = 8000
    scenes = []
    for n in range(2):
        (tmp_path / "audio").mkdir(exist_ok=True)
        wave = rng.uniform(-0.5, 0.5, size=sr).astype(np.float32)  # 1 s
        sf.write(tmp_path / f"audio/train_{n}.wav", wave, sr, subtype="FLOAT")
        scenes.append(
            {
                "id": f"train_{n}",
                "split": "train",
                "audio": f"audio/train_{n}.wav",
                "duration": 1.0,
                "caption": "a dog barking",
                "events": [{"label": "dog", "onset": 0.0, "offset": 1.0, "source": "audio/dog.flac"}],
                "references": [],
            }
        )
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scenes))
    crops = training_crops(tmp_path, 5, sr, 0.25, seed=3)
    assert len(crops) == 5 and all(c.shape == (2000,) for c in crops)
    assert all(np.array_equal(a, b) for a, b in zip(crops, training_crops(tmp_path, 5, sr, 0.25, seed=3), strict=True))
    sources = [sf.read(tmp_path / f"audio/train_{n}.wav", dtype="float32")[0] for n in range(2)]
    for crop in crops:  # each crop is a contiguous piece of a training scene
        assert any(any(np.array_equal(crop, src[s : s + 2000]) for s in range(len(src) - 2000 + 1)) for src in sources)


# ---------------------------------------------------------------- summary


LABELS = ["dog", "dog", "bell", "rain", "bell", "dog"]
SEEDS = [0, 1, 2]


def fake_scores(seed: int, shift: float = 0.0) -> tuple[dict, dict]:
    rng = np.random.default_rng(100 + seed)
    n = len(LABELS)
    per = {
        "hit": (rng.uniform(size=n) > 0.4).astype(np.float64),
        "style": rng.uniform(0.2, 0.9, size=n) + shift,
        "follow": rng.normal(0.05, 0.02, size=n) + shift,
        "target_similarity": rng.uniform(0.1, 0.6, size=n),
        "kl_softmax": rng.uniform(0.5, 2.0, size=n),
    }
    dist = {
        "fd_yamnet": float(rng.uniform(5, 10)),
        "fad_inf_yamnet": float(rng.uniform(1, 3)),
        "kid_yamnet": float(rng.uniform(0, 0.1)),
        "kad_yamnet": float(rng.uniform(0, 0.01)),
        "kl_softmax_yamnet": float(rng.uniform(0.5, 2)),
        "kl_sigmoid_yamnet": float(rng.uniform(0.1, 0.3)),
        "is_yamnet": float(rng.uniform(1, 4)),
    }
    return per, dist


@pytest.fixture
def tables() -> Tables:
    t = Tables(items=len(LABELS), seeds=SEEDS, chance=0.1)
    for seed in SEEDS:
        for protocol in ("paper", "transfer"):
            t.add_seed(protocol, "seap", seed, *fake_scores(seed, 0.1 if protocol == "paper" else 0.0))
        t.add_seed("transfer", "text_only", seed, *fake_scores(seed + 10))
    real_per, real_dist = fake_scores(99)
    t.add_seed("transfer", "real", 0, real_per, real_dist)
    return t


def test_aggregate_is_mean_and_std_over_seeds(tables):
    agg = tables.aggregate()
    assert set(agg) == {"paper", "transfer"}
    assert set(agg["transfer"]) == {"seap", "text_only", "real"}
    row = agg["transfer"]["seap"]
    for key in ("hit", "style", "target_similarity", "kl_softmax"):
        per_seed = [float(np.mean(fake_scores(s)[0][key])) for s in SEEDS]
        assert row[key]["per_seed"] == pytest.approx(per_seed)
        assert row[key]["mean"] == pytest.approx(np.mean(per_seed))
        assert row[key]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    for key in ("fd_yamnet", "kid_yamnet", "is_yamnet"):
        per_seed = [fake_scores(s)[1][key] for s in SEEDS]
        assert row[key]["mean"] == pytest.approx(np.mean(per_seed))
        assert row[key]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert agg["transfer"]["real"]["hit"]["std"] == 0.0
    assert len(agg["transfer"]["real"]["hit"]["per_seed"]) == 1


def test_follow_interval_is_over_items_of_seed_averaged_values(tables):
    follow = tables.aggregate()["transfer"]["seap"]["follow"]
    per_item = np.mean([fake_scores(s)[0]["follow"] for s in SEEDS], axis=0)
    n = len(per_item)
    half = stats.t.ppf(0.975, n - 1) * per_item.std(ddof=1) / np.sqrt(n)
    low, high = follow["ci95"]
    assert follow["items"] == n
    assert low == pytest.approx(per_item.mean() - half)
    assert high == pytest.approx(per_item.mean() + half)
    assert low < follow["mean"] < high
    # the interval is over items, not over the three seed means
    seed_means = [float(np.mean(fake_scores(s)[0]["follow"])) for s in SEEDS]
    seed_half = stats.t.ppf(0.975, 2) * np.std(seed_means, ddof=1) / np.sqrt(3)
    assert high - low != pytest.approx(2 * seed_half)


def test_seap_minus_text_only_is_paired_per_item_over_the_shared_seeds(tables):
    paired = tables.aggregate()["transfer"]["seap"]["follow"]["minus_text_only"]
    diff = np.mean([fake_scores(s)[0]["follow"] - fake_scores(s + 10)[0]["follow"] for s in SEEDS], axis=0)
    n = len(diff)
    half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    assert paired["mean"] == pytest.approx(diff.mean())
    assert paired["ci95"] == pytest.approx([diff.mean() - half, diff.mean() + half])
    assert paired["items"] == n and paired["seeds"] == SEEDS
    hit = tables.aggregate()["transfer"]["seap"]["hit"]["minus_text_only"]  # booleans difference as numbers
    assert -1.0 <= hit["mean"] <= 1.0
    m = tables.metrics()["transfer"]["seap"]
    assert m["follow_minus_text_only"] == pytest.approx(diff.mean())
    assert m["follow_minus_text_only_ci95_low"] < m["follow_minus_text_only"] < m["follow_minus_text_only_ci95_high"]
    assert "follow_minus_text_only" not in tables.metrics()["paper"]["seap"]  # no text-only run under paper here


def test_per_item_scores_are_kept_for_later_pairing(tables):
    rows = tables.everything(LABELS)["per_item"]
    assert set(rows) == {f"{p}/seap/{s}" for p in ("paper", "transfer") for s in SEEDS} | {
        f"transfer/text_only/{s}" for s in SEEDS
    } | {"transfer/real/0"}
    assert rows["transfer/seap/1"]["follow"] == pytest.approx(list(fake_scores(1)[0]["follow"]))
    json.dumps(rows)  # plain numbers, writable as tables.json


def test_metrics_keys_per_protocol_and_system(tables):
    tables.ratio = {"items": 6, "reference swapped": {"distance_log_mel": 1.0, "ratio_log_mel": 0.4}}
    tables.conflict = {
        "items": 6,
        "seap": {"prompt_label_hit": 0.5, "reference_label_hit": 0.2},
        "without_reference": {"prompt_label_hit": 0.6, "reference_label_hit": 0.1},
    }
    m = tables.metrics()
    assert m["items"] == 6 and m["seeds"] == 3 and m["chance_hit"] == 0.1
    for protocol, systems in (("paper", ["seap"]), ("transfer", ["seap", "text_only", "real"])):
        assert sorted(m[protocol]) == sorted(systems)
        for system in systems:
            entry = m[protocol][system]
            for key in ("hit", "style", "follow", "target_similarity", "fad_inf_yamnet", "kid_yamnet"):
                assert key in entry and f"{key}_std" in entry, (protocol, system, key)
            assert "kl_softmax_yamnet" in entry
            assert entry["follow_ci95_low"] < entry["follow"] < entry["follow_ci95_high"]
    agg = tables.aggregate()
    assert m["transfer"]["seap"]["hit"] == agg["transfer"]["seap"]["hit"]["mean"]
    assert m["swap_over_seed_ratio"] == 0.4
    assert m["conflict"] == {"prompt_label_hit": 0.5, "reference_label_hit": 0.2}


def test_per_category_uses_the_transfer_protocol_seed_averaged(tables):
    cat = tables.per_category(LABELS)
    assert cat["protocol"] == "transfer"
    dog = cat["systems"]["seap"]["dog"]
    assert dog["items"] == 3
    style = np.mean([fake_scores(s)[0]["style"] for s in SEEDS], axis=0)
    assert dog["style"] == pytest.approx(style[[0, 1, 5]].mean())


def test_write_produces_files_that_parse(tables, tmp_path):
    tables.write(tmp_path, LABELS)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(tables.metrics()))
    everything = json.loads((tmp_path / "tables.json").read_text())
    assert everything["protocols"]["transfer"]["seap"]["hit"]["mean"] == pytest.approx(
        tables.aggregate()["transfer"]["seap"]["hit"]["mean"]
    )
    assert everything["per_category"]["protocol"] == "transfer"
    md = (tmp_path / "tables.md").read_text()
    assert "### transfer protocol" in md and "### paper protocol" in md and "### follow-its-own-reference" in md
    with open(tmp_path / "per_category.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {
        "system",
        "label",
        "items",
        "hit",
        "style",
        "follow",
        "target_similarity",
        "kl_softmax",
    }
    assert {(r["system"], r["label"]) for r in rows} == {
        (s, label) for s in ("seap", "text_only", "real") for label in ("bell", "dog", "rain")
    }
    dog = next(r for r in rows if r["system"] == "seap" and r["label"] == "dog")
    assert int(dog["items"]) == 3
    assert float(dog["style"]) == pytest.approx(
        tables.per_category(LABELS)["systems"]["seap"]["dog"]["style"], rel=1e-3
    )


def test_a_single_seed_system_shows_no_plus_minus(tables, tmp_path):
    tables.write(tmp_path, LABELS)
    rows = [line for line in (tmp_path / "tables.md").read_text().splitlines() if line.startswith("| ")]
    real = [line for line in rows if line.startswith("| real targets |")]
    seap = [line for line in rows if line.startswith("| SEAP |")]
    assert real and seap
    assert all("±" not in line for line in real)
    assert all("±" in line for line in seap)


GOLDEN = Path(__file__).parent / "golden"


def test_written_tables_are_pinned(tables, tmp_path):
    """tables.md and tables.json of a fixed Tables with every study filled in are exactly the committed ones
    (regenerate them on purpose only: ``SEAP_WRITE_GOLDEN=1``)."""
    tables.add_seed("paper", "real", 0, *fake_scores(98))
    tables.ratio = {
        "items": 6,
        "seed_distance_log_mel": 0.8,
        "reference swapped": {"distance_log_mel": 0.5, "ratio_log_mel": 0.4, "ratio_style": 0.6},
        "reference dropped": {"distance_log_mel": 0.7, "ratio_log_mel": 0.9, "ratio_style": 1.1},
    }
    tables.conflict = {
        "items": 6,
        "seap": {"prompt_label_hit": 0.5, "reference_label_hit": 0.2},
        "without_reference": {"prompt_label_hit": 0.6, "reference_label_hit": 0.1},
    }
    tables.unseen = {"seap": {"hit": 0.5, "style": 0.61, "clap": 0.2}, "text_only": {"hit": 0.4, "style": 0.3}}
    tables.memorisation = {
        "training_crops": 12,
        "real": {"items": 6, "median": 0.2, "p05": 0.1},
        "seap": {"items": 6, "median": 0.25, "p05": 0.12, "below_real_p05": 0.0},
    }
    tables.sweeps = {"guidance": [{"guidance": 1.0, "style_follow": 0.01}, {"guidance": 4.0, "style_follow": 0.03}]}
    tables.write(tmp_path, LABELS)
    for name in ("tables.md", "tables.json"):
        if os.environ.get("SEAP_WRITE_GOLDEN"):
            (GOLDEN / name).write_text((tmp_path / name).read_text())
        assert (tmp_path / name).read_text() == (GOLDEN / name).read_text(), name
