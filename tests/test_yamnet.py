import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from seap_model.audio import AudioError
from seap_model.eval.labels import load_label_table
from seap_model.eval.metrics import chance_hit_rate, label_hit_rate
from seap_model.models.yamnet import YAMNet, audioset_class_names

CORPUS = Path(__file__).resolve().parents[1] / "data" / "sound_events"


@pytest.fixture(scope="module")
def yamnet() -> YAMNet:
    return YAMNet()


def _sine(sample_rate: int, seconds: float = 2.0, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_scores_are_521_finite_probabilities(yamnet):
    noise = np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32)
    scores = yamnet.scores(noise, 16000)
    assert scores.shape == (521,)
    assert np.isfinite(scores).all()
    assert scores.min() >= 0 and scores.max() <= 1
    assert {"White noise", "Noise", "Static"} & set(yamnet.top_k(scores, 5))


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100, 48000])
def test_sine_is_heard_as_a_beep_at_any_sample_rate(yamnet, sample_rate):
    top = yamnet.top_k(yamnet.scores(_sine(sample_rate), sample_rate), 3)
    assert {"Beep, bleep", "Sine wave"} <= set(top)


def test_silence(yamnet):
    assert yamnet.top_k(yamnet.scores(np.zeros(16000), 16000), 1) == ["Silence"]


@pytest.mark.parametrize("samples", [1, 160, 1600])
def test_very_short_clips_are_padded_to_one_patch(yamnet, samples):
    wave = _sine(16000)[:samples]
    assert yamnet.patches(wave, 16000).shape == (1, 1, 96, 64)
    assert np.isfinite(yamnet.scores(wave, 16000)).all()


def test_short_clip_at_another_sample_rate(yamnet):
    assert "Beep, bleep" in yamnet.top_k(yamnet.scores(_sine(8000, 0.1), 8000), 3)


def test_patches_follow_yamnet_padding(yamnet):
    # One patch needs 15600 samples (95 hops + one 400-sample window); each further patch 7680 more.
    counts = [len(yamnet.patches(np.zeros(n), 16000)) for n in (15600, 15601, 23280, 23281, 32000)]
    assert counts == [1, 2, 2, 3, 4]


def test_tensor_and_channel_first_inputs_match_numpy(yamnet):
    wave = _sine(16000, 1.0)
    expected = yamnet.scores(wave, 16000)
    np.testing.assert_array_equal(yamnet.scores(torch.from_numpy(wave), 16000), expected)
    np.testing.assert_array_equal(yamnet.scores(wave[None], 16000), expected)


@pytest.mark.parametrize(
    ("wave", "match"),
    [
        (np.zeros(0), "empty"),
        (np.full(1600, np.nan), "NaN"),
        (np.zeros((2, 1600)), "mono"),
    ],
)
def test_bad_waveforms_raise(yamnet, wave, match):
    with pytest.raises(AudioError, match=match):
        yamnet.scores(wave, 16000)


def test_class_names(yamnet):
    assert len(yamnet.class_names) == 521
    assert yamnet.class_names[0] == "Speech" and yamnet.class_names[494] == "Silence"


def test_label_table_names_exist_and_avoid_universal_classes():
    table = load_label_table()
    assert len(table) == 37  # corpus v2's 30 labels and v1's 7 others
    names = set(audioset_class_names())
    universal = {"Animal", "Music", "Musical instrument", "Speech", "Silence", "Inside, small room"}
    for label, audioset_names in table.items():
        assert audioset_names and set(audioset_names) <= names, label
        assert not universal & set(audioset_names), label


def test_label_table_covers_the_corpus_labels():
    """Both shipped corpora: v2 (the default) and v1 (the tests' fixtures)."""
    corpus_labels = set()
    for corpus in (CORPUS, CORPUS.with_name("sound_events_v2")):
        with open(corpus / "metadata.csv", newline="") as f:
            corpus_labels |= {row["label"] for row in csv.DictReader(f)}
    assert corpus_labels == set(load_label_table())


def test_label_table_rejects_unknown_names(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text('label,audioset_names\ncow_moo,"Cattle, bovinae;Mooo"\n')
    with pytest.raises(ValueError, match=r"label 'cow_moo': 'Mooo' is not a YAMNet class name.*'Moo'"):
        load_label_table(path)


def test_real_clips_hit_their_labels_well_above_chance(yamnet):
    """The shipped corpus: ~0.70 hit rate at top-10 against ~0.04 chance when this was written."""
    with open(CORPUS / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scores = []
    for row in rows:
        wave, sample_rate = sf.read(CORPUS / row["file"], dtype="float32")
        scores.append(yamnet.scores(wave, sample_rate))
    scores = np.stack(scores)
    labels = [row["label"] for row in rows]
    table = load_label_table()
    hit = label_hit_rate(scores, labels, table, yamnet.class_names, k=10)
    chance = chance_hit_rate(scores, labels, table, yamnet.class_names, k=10)
    assert hit > 0.6 and hit > 10 * chance
