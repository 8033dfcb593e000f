"""Unit tests of the generator's components: adapter, styled U-Net, codecs, vocoder, text encoder."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from seap_model.config import UNetParams
from seap_model.models.adapter import StyleAdapter
from seap_model.models.codec import KLCodec, MelPatchCodec, small_vae_config
from seap_model.models.loading import load_codec
from seap_model.models.text_encoder import encode_text
from seap_model.models.unet import add_style_path, build_unet, unet_config
from seap_model.models.vocoder import GriffinLimVocoder

SMALL = UNetParams(block_out_channels=(16, 32), cross_attention=(False, True), attention_heads=2)


def test_adapter_shapes_masking_and_dropped_reference():
    torch.manual_seed(0)
    adapter = StyleAdapter(text_dim=32, reference_dim=16, num_heads=4).eval()
    tokens, ref = torch.randn(3, 7, 32), torch.randn(3, 16)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 4:] = 0
    style = adapter(tokens, mask, ref)
    assert style.shape == (3, 32)
    # padded tokens do not change the style
    tokens2 = tokens.clone()
    tokens2[0, 4:] = 99.0
    assert torch.allclose(adapter(tokens2, mask, ref)[0], style[0], atol=1e-5)
    # the reference changes the style; a dropped reference gives exactly zero
    assert not torch.allclose(adapter(tokens, mask, torch.randn(3, 16)), style)
    dropped = adapter(tokens, mask, ref, torch.tensor([True, False, True]))
    assert torch.equal(dropped[1], torch.zeros(32)) and torch.allclose(dropped[0], style[0])
    # the pooled form takes pooled references only, and says so
    with pytest.raises(ValueError, match=r"reference='pooled'.*\(3, 5, 16\)"):
        adapter(tokens, mask, torch.randn(3, 5, 16))


def test_adapter_concat_mode_and_bad_config():
    assert StyleAdapter(8, 4, 2, mode="concat")(torch.randn(2, 3, 8), torch.ones(2, 3), torch.randn(2, 4)).shape == (
        2,
        8,
    )
    with pytest.raises(ValueError, match="mode"):
        StyleAdapter(8, 4, 2, mode="film")
    with pytest.raises(ValueError, match="divisible"):
        StyleAdapter(10, 4, 3)


def test_styled_unet_is_exactly_the_text_only_unet_at_init():
    torch.manual_seed(0)
    styled = build_unet(SMALL, latent_channels=16, text_dim=32, style_dim=32).eval()
    plain = UNet2DConditionModel.from_config(unet_config(SMALL, 16, 32, None)).eval()
    missing, unexpected = plain.load_state_dict(styled.state_dict(), strict=False)
    assert not missing and all(k.startswith("class_embedding.") for k in unexpected)
    x, t, text = torch.randn(2, 16, 16, 12), torch.tensor([10, 500]), torch.randn(2, 5, 32)
    style = torch.randn(2, 32) * 10
    with torch.no_grad():
        a = styled(x, t, encoder_hidden_states=text, class_labels=style).sample
        b = plain(x, t, encoder_hidden_states=text).sample
    assert a.shape == x.shape
    assert torch.equal(a, b)
    # once the style path is trained (non-zero), the style changes the output
    with torch.no_grad():
        styled.class_embedding.linear_2.weight.normal_()
        c = styled(x, t, encoder_hidden_states=text, class_labels=style).sample
    assert not torch.allclose(a, c)


def test_add_style_path_keeps_pretrained_weights():
    torch.manual_seed(0)
    plain = UNet2DConditionModel.from_config(unet_config(SMALL, 16, 32, None)).eval()
    styled = add_style_path(plain, 32).eval()
    x, t, text = torch.randn(1, 16, 16, 12), torch.tensor([3]), torch.randn(1, 5, 32)
    with torch.no_grad():
        assert torch.equal(styled(x, t, text, class_labels=torch.randn(1, 32)).sample, plain(x, t, text).sample)


def test_patch_codec_is_lossless_and_round_trips(tmp_path):
    codec = MelPatchCodec(n_mels=64, patch=4, downsample=4)
    mels = [torch.randn(64, 100) * 2 - 5 for _ in range(3)]
    codec.fit_normalisation(mels)
    x = torch.stack([m[:, :96] for m in mels])
    z = codec.encode(x)
    assert z.shape == (3, 16, 16, 24) == (3, *codec.latent_shape(96))
    assert torch.allclose(codec.decode(z), x, atol=1e-4)
    assert z.std().item() == pytest.approx(1.0, abs=0.1)
    assert codec.encode(torch.randn(1, 64, 101)).shape[-1] == 24  # trailing frames dropped to a multiple of 16
    codec.save_pretrained(tmp_path / "codec")
    assert torch.equal(load_codec(tmp_path / "codec").encode(x), z)


def test_kl_codec_shapes_and_load(tmp_path):
    torch.manual_seed(0)
    codec = KLCodec(vae_config=small_vae_config(4, (8, 16)), n_mels=64, downsample=2).eval()
    x = torch.randn(2, 64, 32)
    z = codec.encode(x)
    assert z.shape == (2, *codec.latent_shape(32)) == (2, 4, 32, 16)
    assert codec.decode(z).shape == x.shape
    codec.save_pretrained(tmp_path / "kl")
    assert torch.equal(load_codec(tmp_path / "kl").encode(x), z)
    with pytest.raises(FileNotFoundError, match="pretrain-vae"):
        load_codec(tmp_path / "missing")


def test_griffin_lim_inverts_a_tone():
    from seap_model.audio import LogMel, MelSettings
    from tests.conftest import tone

    wave = tone(1.0, freq=1000.0)
    logmel = LogMel(MelSettings())(wave[None])
    out = GriffinLimVocoder(n_iter=16)(logmel)
    spectrum = torch.fft.rfft(out[0]).abs()
    peak_hz = spectrum.argmax().item() * 16000 / out.shape[-1]
    assert abs(peak_hz - 1000.0) < 60
    assert torch.equal(out, GriffinLimVocoder(n_iter=16)(logmel))  # deterministic


def test_text_encoding_pads_to_fixed_length(tiny_text):
    tokenizer, model = tiny_text
    tokens, mask = encode_text(tokenizer, model, ["a dog barking", ""], max_length=12)
    assert tokens.shape == (2, 12, 32) and mask.shape == (2, 12)
    assert mask[0].sum() > mask[1].sum() >= 2  # [CLS] [SEP] for the empty caption


def test_packaged_minilm_loads_offline():
    from seap_model.models.text_encoder import load_text_encoder

    tokenizer, model = load_text_encoder("minilm")
    tokens, _ = encode_text(tokenizer, model, ["a bell ringing"], 8)
    assert tokens.shape == (1, 8, 384)
    assert not any(p.requires_grad for p in model.parameters())
