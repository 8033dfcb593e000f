"""ReferenceEncoder: shapes, unit norm, batch invariance, determinism, save/load, short/silent/NaN input."""

from __future__ import annotations

import math

import pytest
import torch

from seap_model.audio import AudioError
from seap_model.models.loading import load_reference_encoder
from seap_model.models.reference import pad_reference
from seap_model.models.reference_encoder import ReferenceEncoder

SR = 16000
TINY = {"n_fft": 512, "n_mels": 32, "channels": (4, 8, 8, 8), "layers": (1, 1, 1, 1), "embedding_dim": 16}


def tiny(seed: int = 0, **config) -> ReferenceEncoder:
    torch.manual_seed(seed)
    return ReferenceEncoder(**{**TINY, **config}).eval()


def clips(batch: int = 3, seconds: float = 2.0, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    freqs = 200 + 2000 * torch.rand(batch, 1, generator=g)
    return 0.3 * torch.sin(2 * math.pi * freqs * t) + 0.05 * torch.randn(batch, t.numel(), generator=g)


@torch.no_grad()
def test_output_shape_and_unit_norm():
    z = tiny()(clips(3))
    assert z.shape == (3, 16)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


@torch.no_grad()
def test_any_length_from_half_a_second():
    model = tiny()
    assert model(clips(2, seconds=0.5)).shape == (2, 16)
    assert model(clips(2, seconds=3.3)).shape == (2, 16)


@torch.no_grad()
def test_frames_shape():
    model = tiny()
    frames = model.frames(clips(2, seconds=2.0))
    # 2 s at hop 160 -> 201 mel frames, halved three times -> 26; 32 mel bins -> 4 per channel
    assert frames.shape == (2, 26, 8 * 4) and model.frame_dim == 32


@torch.no_grad()
def test_batch_size_invariance_in_eval():
    model, x = tiny(), clips(4)
    together = model(x)
    alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=0)


@torch.no_grad()
def test_deterministic_under_seed():
    x = clips(2)
    torch.testing.assert_close(tiny(seed=7)(x), tiny(seed=7)(x), atol=0, rtol=0)
    assert not torch.allclose(tiny(seed=7)(x), tiny(seed=8)(x))


@torch.no_grad()
def test_save_pretrained_round_trip(tmp_path):
    model, x = tiny(), clips(2)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and list(tmp_path.glob("*.safetensors"))
    loaded = ReferenceEncoder.from_pretrained(tmp_path).eval()
    assert tuple(loaded.config.channels) == TINY["channels"] and loaded.config.n_mels == 32
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    # the type-agnostic loader (used by the cache and fine-tune stages) picks the class from config.json
    generic = load_reference_encoder(tmp_path)
    assert type(generic) is ReferenceEncoder and not generic.training
    torch.testing.assert_close(generic(x), model(x), atol=0, rtol=0)


def test_loader_names_a_missing_or_unknown_encoder(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain-encoder"):
        load_reference_encoder(tmp_path)
    (tmp_path / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(ValueError, match="unknown reference encoder class 'UNet2DModel'"):
        load_reference_encoder(tmp_path)


def test_pad_reference_repeats_up_to_the_minimum():
    x = torch.arange(1.0, 4.0).repeat(2, 1)  # [[1, 2, 3], [1, 2, 3]]
    torch.testing.assert_close(pad_reference(x, 10, 0.7), torch.tensor([[1.0, 2, 3, 1, 2, 3, 1]] * 2))
    assert pad_reference(x, 10, 0.2) is x  # long enough: unchanged


@torch.no_grad()
def test_short_reference_is_an_error_or_padded_by_config():
    short = clips(2, seconds=0.3)
    with pytest.raises(AudioError, match=r"0\.30 s long, at least 0\.50 s is needed \(encoder\.pad_short"):
        tiny()(short)
    padded = tiny(pad_short=True)
    z = padded(short)
    assert z.shape == (2, 16) and torch.isfinite(z).all()
    torch.testing.assert_close(z, padded(pad_reference(short, SR, 0.5)), atol=0, rtol=0)
    # min_seconds is configurable, and a reference at least that long is never padded
    assert tiny(min_seconds=0.25)(short).shape == (2, 16)
    x = clips(2)
    torch.testing.assert_close(padded(x), tiny()(x), atol=0, rtol=0)
    # padding does not hide silence or NaN
    with pytest.raises(AudioError, match="silent"):
        padded(torch.zeros(1, int(0.3 * SR)))
    with pytest.raises(AudioError, match="NaN"):
        padded(torch.full((1, int(0.3 * SR)), float("nan")))


@pytest.mark.parametrize(
    ("wave", "message"),
    [
        (torch.full((1, SR), float("nan")), "NaN"),
        (torch.zeros(2, SR), "silent"),
        (torch.randn(1, SR) * 1e-5, "silent"),
        (torch.randn(1, int(0.3 * SR)) * 0.1, r"0\.30 s long, at least 0\.50 s"),
    ],
    ids=["nan", "digital-silence", "below-80dBFS", "too-short"],
)
def test_bad_references_raise_audio_error(wave, message):
    model = tiny()
    with pytest.raises(AudioError, match=message):
        model(wave)
    with pytest.raises(AudioError, match=message):
        model.frames(wave)


def test_error_names_the_bad_clip():
    x = clips(3)
    x[1, 100] = float("inf")
    with pytest.raises(AudioError, match="reference 1: contains NaN or infinite"):
        tiny()(x)
