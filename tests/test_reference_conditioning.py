"""How the reference reaches the model (issue: target style that works): attention over reference frames, the
decoupled reference cross-attention, two guidance scales, and references drawn from outside a training window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seap_model.config import UNetParams, parse_params
from seap_model.data.manifest import Event, Scene
from seap_model.data.manifest import Reference as SceneReference
from seap_model.models.adapter import StyleAdapter
from seap_model.models.conditioning import Reference
from seap_model.models.reference_attention import ReferenceAttention, cross_attention_layers
from seap_model.models.text_encoder import encode_text
from seap_model.models.unet import build_unet, load_pretrained_unet
from seap_model.pipeline import SEAPPipeline
from seap_model.training.window_references import outside_reference, outside_spans
from tests.conftest import tone
from tests.runner import run_stage
from tests.tiny import dies_during_step, generate_pair, make_cache, with_finetune

# ---------------------------------------------------------------- the adapter's attention


def test_frame_attention_weighs_frames_per_text_token_and_the_pooled_form_cannot():
    torch.manual_seed(0)
    tokens = torch.randn(2, 6, 32)
    pooled = StyleAdapter(32, 16, num_heads=2, reference="pooled").eval()
    frames = StyleAdapter(32, 16, num_heads=2, reference="frames").eval()
    w_pooled = pooled.attention_weights(tokens, torch.randn(2, 16))
    w_frames = frames.attention_weights(tokens, torch.randn(2, 9, 16))
    # one key: every text token puts weight 1 on it, so the "attention" is one fixed map added to every token
    assert w_pooled.shape == (2, 2, 6, 1)
    assert torch.equal(w_pooled, torch.ones_like(w_pooled))
    # nine frames: the weights are a distribution per token, and they differ between text tokens
    assert w_frames.shape == (2, 2, 6, 9)
    torch.testing.assert_close(w_frames.sum(-1), torch.ones(2, 2, 6))
    spread = (w_frames - w_frames.mean(dim=2, keepdim=True)).abs().amax()
    assert spread > 1e-2, spread


def test_frame_adapter_ignores_padding_frames_and_keeps_the_dropped_reference_at_zero():
    torch.manual_seed(0)
    adapter = StyleAdapter(32, 16, num_heads=2, reference="frames").eval()
    tokens, mask = torch.randn(2, 5, 32), torch.ones(2, 5)
    frames = torch.randn(2, 7, 16)
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, 4:] = False
    style = adapter(tokens, mask, frames, reference_mask=valid)
    changed = frames.clone()
    changed[1, 4:] = 50.0  # padding frames: whatever they hold changes nothing
    torch.testing.assert_close(adapter(tokens, mask, changed, reference_mask=valid), style)
    assert not torch.allclose(adapter(tokens, mask, changed), style)  # unmasked, they do count
    dropped = adapter(tokens, mask, frames, torch.tensor([False, True]), valid)
    assert torch.equal(dropped[0], torch.zeros(32))
    with pytest.raises(ValueError, match="frames"):
        adapter(tokens, mask, torch.randn(2, 16))


# ---------------------------------------------------------------- the decoupled reference cross-attention


def _unet():
    torch.manual_seed(0)
    return build_unet(
        UNetParams(block_out_channels=(16, 32), cross_attention=(False, True), attention_heads=2), 8, 32, None
    ).eval()


def _unet_inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 8, 8, 8, generator=g), torch.randn(batch, 6, 32, generator=g)


@pytest.mark.parametrize("reference", ["pooled", "frames"])
def test_decoupled_reference_attention_starts_as_an_exact_no_op(reference):
    unet = _unet()
    x, text = _unet_inputs()
    with torch.no_grad():
        plain = unet(x, 10, encoder_hidden_states=text).sample
    attention = ReferenceAttention.for_unet(unet, 16, reference, num_tokens=3).eval()
    refs = torch.randn(2, 16) if reference == "pooled" else torch.randn(2, 5, 16)
    with torch.no_grad(), attention.attached(unet):
        styled = unet(x, 10, encoder_hidden_states=(text, [attention.tokens(refs)])).sample
    torch.testing.assert_close(styled, plain, rtol=0, atol=1e-6)
    # the processors are only there inside the block
    assert not any("IPAdapter" in type(p).__name__ for p in unet.attn_processors.values())
    # once the value projections are trained (here: perturbed), the reference changes the output
    with torch.no_grad():
        for processor in attention.processors.values():
            processor.to_v_ip[0].weight.normal_(std=0.3)
        with attention.attached(unet):
            moved = unet(x, 10, encoder_hidden_states=(text, [attention.tokens(refs)])).sample
            other = unet(x, 10, encoder_hidden_states=(text, [attention.tokens(torch.randn_like(refs))])).sample
            zero = unet(x, 10, encoder_hidden_states=(text, [attention.tokens(refs, torch.zeros(2).bool())])).sample
    assert not torch.allclose(moved, plain, atol=1e-4) and not torch.allclose(moved, other, atol=1e-4)
    torch.testing.assert_close(zero, plain, rtol=0, atol=1e-6)  # a dropped reference adds exactly nothing


def test_decoupled_reference_attention_leaves_a_pretrained_unet_unchanged(tmp_path):
    """A U-Net saved in diffusers' layout and in Tango's (``pytorch_model_main.bin`` + config)."""
    unet = _unet()
    unet.save_pretrained(tmp_path / "diffusers" / "unet")
    tango = tmp_path / "tango"
    tango.mkdir()
    torch.save({f"unet.{k}": v for k, v in unet.state_dict().items()}, tango / "pytorch_model_main.bin")
    (tango / "unet_config.json").write_text(json.dumps(dict(unet.config)))
    x, text = _unet_inputs()
    for folder in (tmp_path / "diffusers", tango):
        loaded = load_pretrained_unet(str(folder)).eval()
        with torch.no_grad():
            plain = loaded(x, 10, encoder_hidden_states=text).sample
            attention = ReferenceAttention.for_unet(loaded, 16).eval()
            with attention.attached(loaded):
                styled = loaded(x, 10, encoder_hidden_states=(text, [attention.tokens(torch.randn(2, 16))])).sample
        torch.testing.assert_close(styled, plain, rtol=0, atol=1e-6)
        assert set(cross_attention_layers(loaded)) == {n for n in loaded.attn_processors if "attn2" in n}


def test_reference_attention_refuses_another_unets_layers():
    attention = ReferenceAttention.for_unet(_unet(), 16)
    other = build_unet(
        UNetParams(block_out_channels=(16, 32, 32), cross_attention=(False, True, True), attention_heads=2),
        8,
        32,
        None,
    )
    with pytest.raises(ValueError, match="another U-Net"):
        attention.attach(other)


# ---------------------------------------------------------------- two guidance scales


@pytest.fixture
def decoupled_pipeline(tiny_pipeline):
    """The tiny pipeline with a (perturbed, so it matters) decoupled reference attention beside its adapter."""
    attention = ReferenceAttention.for_unet(tiny_pipeline.unet, 16, num_tokens=2).eval()
    with torch.no_grad():
        for processor in attention.processors.values():
            processor.to_v_ip[0].weight.normal_(std=0.3)
    tiny_pipeline.register_modules(reference_attention=attention)
    return tiny_pipeline


@pytest.mark.parametrize("which", ["adapter", "decoupled"])
def test_style_guidance_zero_is_text_only_guidance(which, tiny_pipeline, decoupled_pipeline):
    pipe = decoupled_pipeline if which == "decoupled" else tiny_pipeline
    ref = tone(1.0)
    text_only = generate_pair(pipe, None).audios  # guidance 3 with the reference dropped
    ignored = generate_pair(pipe, ref, text_guidance_scale=3.0, style_guidance_scale=0.0).audios
    np.testing.assert_array_equal(ignored, text_only)
    # equal scales are the single scale (today's behaviour), and a larger style scale moves the output
    np.testing.assert_array_equal(
        generate_pair(pipe, ref, text_guidance_scale=3.0, style_guidance_scale=3.0).audios,
        generate_pair(pipe, ref).audios,
    )
    more = generate_pair(pipe, ref, text_guidance_scale=3.0, style_guidance_scale=6.0).audios
    assert not np.allclose(more, generate_pair(pipe, ref).audios, atol=1e-4)


def test_three_branches_in_one_batched_call_equal_three_calls(decoupled_pipeline):
    pipe = decoupled_pipeline
    tokens, mask = pipe.encode_prompt(["a dog barking", "a bell ringing"])
    null_tokens, null_mask = encode_text(pipe.tokenizer, pipe.text_encoder, ["", ""], pipe.config.max_text_length)

    ref = Reference(pipe.encode_reference([tone(1.0), tone(1.0, freq=900.0)], 16000), None)
    branches = [pipe.condition(null_tokens, null_mask, None), pipe.condition(tokens, mask, None)]
    branches.append(pipe.condition(tokens, mask, ref))
    pipe.scheduler.set_timesteps(5)
    t = pipe.scheduler.timesteps[1]
    latents = torch.randn(2, *pipe.codec.latent_shape(48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), pipe.reference_attention.attached(pipe.unet):
        batched = pipe.guided_noise(latents, t, branches, [3.0, 5.0], batched=True)
        separate = pipe.guided_noise(latents, t, branches, [3.0, 5.0], batched=False)
    torch.testing.assert_close(batched, separate, rtol=1e-4, atol=1e-5)
    assert (batched - separate).abs().max() < 1e-5


def test_guidance_scales_are_checked(tiny_pipeline):
    with pytest.raises(ValueError, match="style_guidance_scale"):
        generate_pair(tiny_pipeline, tone(1.0), style_guidance_scale=-1.0)
    with pytest.raises(ValueError, match="text_guidance_scale"):
        generate_pair(tiny_pipeline, tone(1.0), text_guidance_scale=float("nan"))


# ---------------------------------------------------------------- training and saving every mode


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes")
    return root, make_cache(root)


@pytest.mark.parametrize(
    "style,reference",
    [("cross_attention", "frames"), ("decoupled", "pooled"), ("decoupled", "frames")],
)
def test_each_mode_trains_saves_loads_and_its_reference_matters(tiny_setup, style, reference):
    root, base = tiny_setup
    tag = f"{style}-{reference}"
    params = with_finetune(
        base,
        style=style,
        adapter={"heads": 2, "reference": reference, "tokens": 2},
        steps=30,
        checkpoint_every=15,
        log_every=5,
        lr=3e-3,
        checkpoint_dir=str(root / tag / "ckpt"),
        out_dir=str(root / tag / "pipe"),
        report_dir=str(root / tag / "report"),
    )
    metrics = run_stage("finetune", parse_params(params))
    assert metrics["steps"] == 30 and np.isfinite(metrics["final_val_loss"])
    pipe = SEAPPipeline.from_pretrained(root / tag / "pipe")
    assert pipe.reference_form == reference
    if style == "decoupled":
        assert pipe.adapter is None and pipe.reference_attention is not None
        assert pipe.unet.class_embedding is None  # the reference goes through cross-attention only
        # the saved U-Net is a plain one: the reference weights are in their own component folder
        assert (root / tag / "pipe" / "reference_attention" / "diffusion_pytorch_model.safetensors").is_file()
        assert not any("IPAdapter" in type(p).__name__ for p in pipe.unet.attn_processors.values())
        trained = [p.to_v_ip[0].weight.abs().max() for p in pipe.reference_attention.processors.values()]
        assert min(trained) > 0  # the zero-initialised values were trained
    else:
        assert pipe.adapter.config.reference == "frames" and pipe.reference_attention is None
    with_ref = generate_pair(pipe, tone(1.0)).audios
    assert np.isfinite(with_ref).all()
    assert not np.allclose(with_ref, generate_pair(pipe, tone(1.0, freq=2500.0)).audios)
    assert not np.allclose(with_ref, generate_pair(pipe, None).audios)
    # a second load gives the same clips (everything the mode needs was saved)
    again = SEAPPipeline.from_pretrained(root / tag / "pipe")
    np.testing.assert_array_equal(generate_pair(again, tone(1.0)).audios, with_ref)


def test_killed_decoupled_training_resumes_to_the_straight_runs_weights(tiny_setup, monkeypatch):
    """The reference attention is in the checkpoint (attached to the U-Net and kept by its own component)."""
    import seap_model.training.loop as loop

    root, base = tiny_setup

    def params(tag: str) -> dict:
        return with_finetune(
            base,
            style="decoupled",
            steps=6,
            checkpoint_every=2,
            log_every=2,
            checkpoint_dir=str(root / tag / "ckpt"),
            out_dir=str(root / tag / "pipe"),
            report_dir=str(root / tag / "report"),
        )

    run_stage("finetune", parse_params(params("straight")))
    with monkeypatch.context() as m:
        m.setattr(loop, "diffusion_loss", dies_during_step(5))
        with pytest.raises(KeyboardInterrupt):
            run_stage("finetune", parse_params(params("killed")))
    assert (root / "killed" / "ckpt" / "seap" / "latest").read_text().strip() == "step-00000004"
    run_stage("finetune", parse_params(params("killed")))
    assert json.loads((root / "killed" / "report" / "run.json").read_text())["resumed_from_step"] == 4
    for part in ("reference_attention", "unet"):
        a = getattr(SEAPPipeline.from_pretrained(root / "straight" / "pipe"), part).state_dict()
        b = getattr(SEAPPipeline.from_pretrained(root / "killed" / "pipe"), part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


# ---------------------------------------------------------------- references from outside the window


def _scene() -> Scene:
    events = [Event("dog", 0.2, 1.0, "audio/dog_01.flac"), Event("dog", 2.6, 3.6, "audio/dog_02.flac")]
    refs = [SceneReference("dog", "refs/dog.flac", [(0.2, 1.0), (2.6, 3.6)])]
    return Scene("train_0000", "train", "scene.flac", 4.16, "a dog barking", events, refs)


def test_outside_reference_uses_the_labels_other_span_and_never_the_windows_samples():
    scene = _scene()
    sr = 1000
    wave = torch.arange(int(4.16 * sr), dtype=torch.float32) / 10_000 + 0.01  # each sample says where it is from
    reference = torch.rand(2 * sr)
    assert outside_spans(scene, "dog", 0.0, 2.08) == [(2.6, 3.6)]
    got = outside_reference(scene, wave, "dog", (0.0, 2.08), reference, sr, np.random.default_rng(0))
    assert got.kind == "other_span" and got.wave.numel() == reference.numel()
    window_values = set(wave[: int(2.08 * sr)].tolist())
    assert not window_values & set(got.wave.tolist())
    # too little of the label outside the window: a re-cropped, shifted, re-gained copy of the reference
    got = outside_reference(scene, wave, "dog", (0.0, 3.5), reference, sr, np.random.default_rng(0))
    assert got.kind == "augmented" and got.wave.numel() == reference.numel()
    assert not torch.allclose(got.wave, reference)
    again = outside_reference(scene, wave, "dog", (0.0, 3.5), reference, sr, np.random.default_rng(0))
    assert torch.equal(again.wave, got.wave)  # seeded


def test_reference_window_outside_and_frames_are_params():
    params = parse_params({"finetune": {"reference_window": "outside", "adapter": {"reference": "frames"}}})
    assert params.finetune.reference_window == "outside" and params.finetune.adapter.reference == "frames"
    with pytest.raises(ValueError, match="finetune.adapter.reference"):
        parse_params({"finetune": {"adapter": {"reference": "sequence"}}})
    with pytest.raises(ValueError, match="finetune.style"):
        parse_params({"finetune": {"style": "ip_adapter"}})


def test_cache_stage_keeps_reference_frames_and_outside_references(tmp_path):
    """The ci profile's first stages on the shipped corpus, then the cache with both options on."""
    import yaml
    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in yaml.safe_load((root / "configs" / "ci.yaml").read_text()).items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    paths = {
        "data": {"corpus": str(root / "data/sound_events"), "raw_dir": "raw", "serst_dir": "serst", "report_dir": "r1"},
        "encoder": {"out_dir": "enc", "report_dir": "r2"},
        "codec": {"out_dir": "codec", "report_dir": "r3"},
        "finetune": {
            "cache_dir": "cache",
            "reference_window": "outside",
            "adapter": {"heads": 2, "reference": "frames"},
        },
    }
    for section, values in paths.items():
        data[section] = {**data[section], **values}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        params = parse_params(data)
        for stage in ("download", "segment", "pretrain-encoder", "pretrain-vae", "cache"):
            run_stage(stage, params)
    finally:
        os.chdir(cwd)
    tensors = load_file(str(tmp_path / "cache" / "train.safetensors"))
    windows = json.loads((tmp_path / "cache" / "train_windows.json").read_text())["windows"]
    summary = json.loads((tmp_path / "cache" / "summary.json").read_text())
    frames = tensors["reference_frames"]
    assert frames.dim() == 3 and frames.shape[0] == tensors["references"].shape[0] and frames.dtype == torch.float16
    assert frames.shape[-1] == 8 * 8  # ci encoder: 8 channels x 8 mel bands after three stride-2 stages
    outside = summary["train_outside_references"]
    used = [r for w in windows for r in w["references"]]
    # each window has references of its own (made for it), one per (window, label): none is a scene reference
    # that other windows of the scene share
    assert len(used) == len(set(used)) == sum(outside.values())
    assert tensors["references"].shape[0] > len(used)  # the scene references are still there, after them
    assert set(outside) <= {"other_span", "augmented"} and outside.get("augmented", 0) > 0
