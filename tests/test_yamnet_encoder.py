"""YAMNetEncoder (frozen AudioSet model behind the reference-encoder interface): shape, norm, batch
invariance, determinism, short/silent/NaN input, save/load, and a SEAPPipeline round trip with it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from seap_model.audio import AudioError
from seap_model.models.adapter import StyleAdapter
from seap_model.models.loading import load_reference_encoder
from seap_model.models.reference import pad_reference
from seap_model.models.yamnet_encoder import YAMNetEncoder
from tests.conftest import tone

SR = 16000


def clips(batch: int = 3, seconds: float = 2.0, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    freqs = 200 + 2000 * torch.rand(batch, 1, generator=g)
    return 0.3 * torch.sin(2 * math.pi * freqs * t) + 0.05 * torch.randn(batch, t.numel(), generator=g)


@pytest.mark.parametrize(("pooling", "dim"), [("log_mean_score", 521), ("mean_logit", 521), ("mean_max_logit", 1042)])
def test_output_shape_and_unit_norm(pooling, dim):
    encoder = YAMNetEncoder(pooling=pooling)
    assert encoder.config.embedding_dim == dim and encoder.config.sample_rate == SR
    assert not list(encoder.parameters())  # frozen: nothing to train
    z = encoder(clips(3))
    assert z.shape == (3, dim) and z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(z[0], z[1])  # different tones, different embeddings


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="pooling 'max'"):
        YAMNetEncoder(pooling="max")
    with pytest.raises(ValueError, match="521-dim embeddings, not 128"):
        YAMNetEncoder(embedding_dim=128)


def test_batch_size_invariance_and_determinism():
    encoder, x = YAMNetEncoder(), clips(4)
    together = encoder(x)
    alone = torch.cat([encoder(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(alone, together, atol=1e-6, rtol=0)
    torch.testing.assert_close(YAMNetEncoder()(x), together, atol=0, rtol=0)  # no randomness anywhere
    assert encoder(x[0]).shape == (1, 521)  # a single clip [samples] works too


def test_centre_save_and_load_round_trip(tmp_path):
    encoder, x = YAMNetEncoder(pooling="mean_max_logit"), clips(4)
    before = encoder(x)
    encoder.fit_center(x)
    assert encoder.center.abs().sum() > 0
    centred = encoder(x)
    assert not torch.allclose(centred, before)
    torch.testing.assert_close(centred.mean(dim=0).norm(), centred.mean(dim=0).norm())  # finite
    encoder.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "YAMNetEncoder"
    loaded = load_reference_encoder(tmp_path)
    assert type(loaded) is YAMNetEncoder and loaded.config.embedding_dim == 1042
    torch.testing.assert_close(loaded(x), centred, atol=0, rtol=0)


def test_short_reference_is_an_error_or_padded_by_config():
    short = clips(2, seconds=0.3)
    with pytest.raises(AudioError, match=r"0\.30 s long, at least 0\.50 s is needed"):
        YAMNetEncoder()(short)
    padded = YAMNetEncoder(pad_short=True)
    z = padded(short)
    assert z.shape == (2, 521) and torch.isfinite(z).all()
    torch.testing.assert_close(z, YAMNetEncoder()(pad_reference(short, SR, 0.5)), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("wave", "message"),
    [
        (torch.full((1, SR), float("nan")), "NaN"),
        (torch.zeros(2, SR), "silent"),
        (torch.randn(1, SR) * 1e-5, "silent"),
    ],
    ids=["nan", "digital-silence", "below-80dBFS"],
)
def test_silence_and_nan_raise_audio_error(wave, message):
    with pytest.raises(AudioError, match=message):
        YAMNetEncoder()(wave)
    with pytest.raises(AudioError, match=message):
        YAMNetEncoder(pad_short=True)(wave)


def test_pipeline_with_yamnet_encoder_saves_and_loads(tiny_pipeline, tmp_path):
    from seap_model.pipeline import SEAPPipeline

    encoder = YAMNetEncoder()
    encoder.fit_center(clips(4))
    torch.manual_seed(0)
    pipe = SEAPPipeline(
        **{
            **tiny_pipeline.components,
            "reference_encoder": encoder.eval(),
            "adapter": StyleAdapter(32, 521, num_heads=2).eval(),
        },
        max_text_length=16,
    )

    def run(p):
        return p(
            "a bell ringing",
            tone(1.0),
            duration=0.5,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            progress=False,
        ).audios

    before = run(pipe)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["reference_encoder"] == ["seap_model.models.yamnet_encoder", "YAMNetEncoder"]
    loaded = SEAPPipeline.from_pretrained(tmp_path / "pipe")
    assert type(loaded.reference_encoder) is YAMNetEncoder
    torch.testing.assert_close(loaded.reference_encoder.center, encoder.center)
    ref = [tone(1.0)]
    torch.testing.assert_close(loaded.encode_reference(ref, SR), pipe.encode_reference(ref, SR), atol=0, rtol=0)
    # same weights; the reloaded attention may round differently in the last bit, so audio is close, not equal
    np.testing.assert_allclose(run(loaded), before, atol=1e-2)
