"""The paper's reference rule (padding with later spans, trim, drop) and the energy filter."""

import numpy as np
import pytest

from seap_model.config import ReferenceParams
from seap_model.data.manifest import Event
from seap_model.data.references import SILENT, TOO_SHORT, active_frames, cut_references, reference_spans

SR = 16000


def test_short_spans_are_padded_with_later_spans_and_trimmed():
    spans = [(0.0, 0.5), (1.0, 1.8), (2.0, 3.0)]  # 0.5 s + 0.8 s + 1.0 s
    refs = reference_spans(spans, 2.0)
    assert refs[0] == [(0.0, 0.5), (1.0, 1.8), (2.0, pytest.approx(2.7))]  # 0.5 + 0.8 + 0.7 of the third
    assert refs[1] is None  # 0.8 + 1.0 = 1.8 s: too short, no wrap-around to earlier spans
    assert refs[2] is None


def test_long_span_is_trimmed_to_exactly_the_reference_length():
    assert reference_spans([(1.0, 4.16)], 2.0) == [[(1.0, 3.0)]]


def test_spans_reaching_exactly_the_length_are_kept_and_unused_later_spans_ignored():
    refs = reference_spans([(0.0, 1.0), (2.0, 3.0), (3.5, 4.0)], 2.0)
    assert refs[0] == [(0.0, 1.0), (2.0, 3.0)]
    assert refs[1] is None  # 1.0 + 0.5


def test_many_tiny_spans_add_up_despite_float_error():
    spans = [(k * 0.1, k * 0.1 + 0.05) for k in range(40)]  # 40 x 50 ms = 2 s
    refs = reference_spans(spans, 2.0)
    assert refs[0] is not None and len(refs[0]) == 40
    assert refs[1:] == [None] * 39


def test_no_spans_no_references():
    assert reference_spans([], 2.0) == []


def test_active_frames_threshold():
    energy = np.array([1.0, 1e-3, 1e-4, 0.0])
    assert active_frames(energy, 1.0, -35.0).tolist() == [True, True, False, False]


def _tone(seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_cut_references_cuts_scene_audio_and_drops_silent_and_too_short():
    # a loud 'dog' for 2.5 s, then a 'bell' 60 dB quieter for 1.5 s; a 'cat' recurring twice (1.2 s total)
    scene = np.concatenate([_tone(2.5, 0.5), _tone(1.5, 0.0005), np.zeros(round(0.16 * SR), np.float32)])
    events = [
        Event("dog", 0.0, 2.5, "audio/dog.flac"),
        Event("bell", 2.5, 4.0, "audio/bell.flac"),
        Event("cat", 0.1, 0.7, "audio/cat.flac"),
        Event("cat", 1.0, 1.6, "audio/cat.flac"),
    ]
    params = ReferenceParams(seconds=1.0, frame_seconds=0.05, active_db=-35.0, min_active_fraction=0.25)
    cuts = {(c.label, c.index): c for c in cut_references(scene, events, SR, params)}
    assert sorted(cuts) == [("bell", 0), ("cat", 0), ("cat", 1), ("dog", 0)]
    dog = cuts["dog", 0]
    assert not dog.dropped and dog.spans == [(0.0, 1.0)]
    np.testing.assert_array_equal(dog.wave, scene[:SR])
    cat = cuts["cat", 0]
    assert not cat.dropped and cat.spans == [(0.1, 0.7), (1.0, pytest.approx(1.4))]
    np.testing.assert_array_equal(cat.wave, np.concatenate([scene[1600:11200], scene[16000:22400]]))
    assert cuts["cat", 1].dropped == TOO_SHORT and cuts["cat", 1].wave is None
    assert cuts["bell", 0].dropped == SILENT and cuts["bell", 0].wave is None


def test_energy_filter_counts_the_fraction_of_active_frames():
    scene = np.concatenate([_tone(1.0, 0.5), np.zeros(SR, np.float32)])
    events = [Event("dog", 0.5, 1.5, "x")]  # half loud, half silent
    keep = ReferenceParams(seconds=1.0, frame_seconds=0.05, active_db=-35.0, min_active_fraction=0.5)
    drop = ReferenceParams(seconds=1.0, frame_seconds=0.05, active_db=-35.0, min_active_fraction=0.55)
    assert not cut_references(scene, events, SR, keep)[0].dropped
    assert cut_references(scene, events, SR, drop)[0].dropped == SILENT
