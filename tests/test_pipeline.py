"""SEAPPipeline: generation, determinism, save_pretrained/from_pretrained round trip, input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from seap_model.audio import AudioError
from seap_model.pipeline import SEAPPipeline
from tests.conftest import make_tiny_pipeline, tone
from tests.tiny import generate_pair


def test_generates_finite_audio_of_the_requested_length(tiny_pipeline):
    out = generate_pair(tiny_pipeline, tone(1.0))
    frames = tiny_pipeline.latent_frames(0.5)
    assert out.audios.shape == (2, (frames - 1) * 160)
    assert out.sample_rate == 16000 and np.isfinite(out.audios).all()


def test_same_seed_same_audio_and_reference_matters(tiny_pipeline):
    a, b = generate_pair(tiny_pipeline, tone(1.0)), generate_pair(tiny_pipeline, tone(1.0))
    assert np.array_equal(a.audios, b.audios)
    assert not np.allclose(a.audios, generate_pair(tiny_pipeline, tone(1.0), seed=1).audios)
    assert not np.allclose(a.audios, generate_pair(tiny_pipeline, None).audios)  # reference dropped -> different audio
    assert not np.allclose(a.audios, generate_pair(tiny_pipeline, tone(1.0, freq=2500.0)).audios)


def test_save_pretrained_round_trip_is_identical(tiny_pipeline, tmp_path):
    before = generate_pair(tiny_pipeline, tone(1.0))
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["adapter"] == ["seap_model.models.adapter", "StyleAdapter"]
    for part in ("unet", "adapter", "reference_encoder", "codec", "text_encoder"):
        assert any((tmp_path / "pipe" / part).glob("*.safetensors")), part
    loaded = SEAPPipeline.from_pretrained(tmp_path / "pipe")
    after = generate_pair(loaded, tone(1.0))
    assert np.array_equal(before.audios, after.audios)


def test_scheduler_is_swappable(tiny_pipeline):
    tiny_pipeline.scheduler = DDIMScheduler.from_config(tiny_pipeline.scheduler.config)
    assert np.isfinite(generate_pair(tiny_pipeline, tone(1.0)).audios).all()


def test_per_item_generators_do_not_depend_on_the_batch(tiny_pipeline):
    both = tiny_pipeline(
        ["a dog barking", "a bell ringing"],
        tone(1.0),
        duration=0.5,
        num_inference_steps=3,
        generator=[torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)],
        progress=False,
    )
    alone = tiny_pipeline(
        ["a bell ringing"],
        tone(1.0),
        duration=0.5,
        num_inference_steps=3,
        generator=[torch.Generator().manual_seed(8)],
        progress=False,
    )
    # batched BLAS differs in the last bits, which Griffin-Lim spreads a little
    assert np.corrcoef(both.audios[1], alone.audios[0])[0, 1] > 0.999


def test_reference_at_another_rate_is_resampled(tiny_pipeline):
    ref48 = tone(1.0, sr=48000)
    out = tiny_pipeline(
        "a dog barking", ref48, reference_sample_rate=48000, duration=0.5, num_inference_steps=2, progress=False
    )
    assert np.isfinite(out.audios).all()


@pytest.mark.parametrize(
    "prompt, reference, error, message",
    [
        ("  ", tone(1.0), ValueError, "prompt 0 is empty"),
        ("a dog", tone(0.3), AudioError, "0.30 s long"),
        ("a dog", torch.zeros(16000), AudioError, "silent"),
        ("a dog", torch.full((16000,), float("nan")), AudioError, "NaN"),
    ],
)
def test_bad_input_gives_a_clear_error(tiny_pipeline, prompt, reference, error, message):
    with pytest.raises(error, match=message):
        tiny_pipeline(prompt, reference, duration=0.5, num_inference_steps=2, progress=False)


def test_a_saved_pipeline_does_not_depend_on_whether_its_tokenizer_was_loaded_offline(tiny_text, tmp_path):
    """The kill suite found it: ``tokenizer_config.json`` recorded ``local_files_only``, so ``models/pipeline``
    hashed differently with and without HF_HUB_OFFLINE."""
    from transformers import AutoTokenizer

    from seap_model.models.text_encoder import resolve_text_encoder

    saved = []
    for offline in (True, False):
        tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
        tokenizer.init_kwargs["local_files_only"] = offline  # what transformers records under HF_HUB_OFFLINE=1/0
        make_tiny_pipeline((tokenizer, tiny_text[1])).save_pretrained(tmp_path / str(offline))
        saved.append((tmp_path / str(offline) / "tokenizer" / "tokenizer_config.json").read_bytes())
    assert saved[0] == saved[1]
