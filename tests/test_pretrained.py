"""Pretrained components from disk, in their real layouts, as tiny random checkpoints the tests write:
Tango's U-Net (pytorch_model_main.bin + diffusers config), AudioLDM's vae/ and vocoder/, FLAN-T5's encoder."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import AutoTokenizer, SpeechT5HifiGan, SpeechT5HifiGanConfig, T5Config, T5EncoderModel

from seap_model.audio import MelSettings
from seap_model.config import CodecParams, UNetParams, VocoderParams
from seap_model.models.codec import make_codec
from seap_model.models.text_encoder import encode_text, load_text_encoder, resolve_text_encoder
from seap_model.models.unet import build_unet
from seap_model.models.vocoder import make_vocoder

TINY_UNET = {
    "in_channels": 8,
    "out_channels": 8,
    "block_out_channels": [16, 32],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
    "norm_num_groups": 8,
}


def write_tango(folder, unet: UNet2DConditionModel, config: dict) -> None:
    folder.mkdir(parents=True)
    state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    state["text_encoder.shared.weight"] = torch.zeros(3, 4)  # the rest of AudioDiffusion, ignored
    torch.save(state, folder / "pytorch_model_main.bin")
    (folder / "diffusion_model_config.json").write_text(json.dumps(config))


def test_tango_unet_loads_and_starts_unchanged(tmp_path):
    torch.manual_seed(0)
    tango = UNet2DConditionModel.from_config(TINY_UNET).eval()
    write_tango(tmp_path / "tango", tango, TINY_UNET)
    seap = build_unet(UNetParams(pretrained=str(tmp_path / "tango")), latent_channels=8, text_dim=32, style_dim=32)
    x, t, text = torch.randn(1, 8, 16, 8), torch.tensor([5]), torch.randn(1, 4, 32)
    with torch.no_grad():
        styled = seap.eval()(x, t, text, class_labels=torch.randn(1, 32)).sample
        assert torch.equal(styled, tango(x, t, text).sample)


def test_tango_shape_mismatch_names_component_and_shapes(tmp_path):
    tango = UNet2DConditionModel.from_config(TINY_UNET)
    wrong = dict(TINY_UNET, block_out_channels=[16, 48])
    write_tango(tmp_path / "tango", tango, wrong)
    with pytest.raises(ValueError, match=r"Tango U-Net .*has shape \(32,.*expects \(48,"):
        build_unet(UNetParams(pretrained=str(tmp_path / "tango")), 8, 32, 32)


def test_pretrained_unet_must_fit_codec_and_text_encoder(tmp_path):
    UNet2DConditionModel.from_config(TINY_UNET).save_pretrained(tmp_path / "pipe" / "unet")
    with pytest.raises(ValueError, match="in_channels 8 != codec latent channels 16"):
        build_unet(UNetParams(pretrained=str(tmp_path / "pipe")), 16, 32, 32)
    with pytest.raises(ValueError, match="cross_attention_dim 32 != text encoder width 384"):
        build_unet(UNetParams(pretrained=str(tmp_path / "pipe")), 8, 384, 384)


def test_audioldm_vae_is_used_time_major_on_raw_log_mel(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        latent_channels=8,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        scaling_factor=0.9,
    ).eval()
    vae.save_pretrained(tmp_path / "audioldm" / "vae")
    codec = make_codec(CodecParams(type="pretrained", pretrained=str(tmp_path / "audioldm")), 64, 2).eval()
    assert codec.time_axis == -2
    logmel = torch.randn(2, 64, 40)
    z = codec.encode(logmel)
    assert z.shape == (2, *codec.latent_shape(40))
    assert z.shape == (2, 8, 20, 32)  # (channels, time, mel) as AudioLDM/Tango latents
    with torch.no_grad():
        expected = vae.encode(logmel.unsqueeze(1).transpose(-1, -2)).latent_dist.mode() * 0.9
    assert torch.allclose(z, expected, atol=1e-6)
    assert codec.decode(z).shape == logmel.shape


def tiny_hifigan(model_in_dim: int = 64) -> SpeechT5HifiGan:
    torch.manual_seed(0)
    config = SpeechT5HifiGanConfig(
        model_in_dim=model_in_dim,
        sampling_rate=16000,
        upsample_initial_channel=16,
        upsample_rates=[10, 4, 4],
        upsample_kernel_sizes=[20, 8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
    )
    return SpeechT5HifiGan(config).eval()


def test_audioldm_hifigan_vocoder_loads(tmp_path):
    source = tiny_hifigan()
    source.save_pretrained(tmp_path / "audioldm" / "vocoder")
    vocoder = make_vocoder(VocoderParams(type="hifigan", pretrained=str(tmp_path / "audioldm")), MelSettings())
    logmel = torch.randn(1, 64, 20)
    wave = vocoder(logmel)
    assert wave.shape[-1] == 20 * 160
    with torch.no_grad():
        assert torch.allclose(wave, source(logmel.transpose(1, 2)), atol=1e-6)


def test_hifigan_that_does_not_fit_the_mel_settings_is_refused(tmp_path):
    tiny_hifigan(model_in_dim=80).save_pretrained(tmp_path / "voc")
    with pytest.raises(ValueError, match="model_in_dim 80 != n_mels 64"):
        make_vocoder(VocoderParams(type="hifigan", pretrained=str(tmp_path / "voc")), MelSettings())


def test_flan_t5_loads_its_encoder_only(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder("minilm"))
    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        decoder_start_token_id=0,
    )
    T5EncoderModel(config).save_pretrained(tmp_path / "flan-t5-tiny")
    tokenizer.save_pretrained(tmp_path / "flan-t5-tiny")
    tok, model = load_text_encoder(str(tmp_path / "flan-t5-tiny"))
    assert isinstance(model, T5EncoderModel) and not any(p.requires_grad for p in model.parameters())
    tokens, mask = encode_text(tok, model, ["a dog barking"], 8)
    assert tokens.shape == (1, 8, 32) and mask.shape == (1, 8)
