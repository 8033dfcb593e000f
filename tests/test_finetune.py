"""The finetune stage on a tiny synthetic cache: it learns, saves a loadable pipeline, and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from seap_model.config import ParamsError, parse_params
from seap_model.finetune import finetune
from seap_model.models.codec import MelPatchCodec
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.text_encoder import encode_text, load_text_encoder
from seap_model.pipeline import SEAPPipeline


def make_cache(root: Path) -> dict:
    """Random scenes whose latents depend on their caption, a window per scene, MiniLM caption tokens."""
    g = torch.Generator().manual_seed(0)
    cache = root / "cache"
    cache.mkdir(parents=True)
    captions = ["", "a dog barking", "a bell ringing"]
    tokenizer, model = load_text_encoder("minilm")
    tokens, mask = encode_text(tokenizer, model, captions, 8)
    save_file({"tokens": tokens.contiguous(), "mask": mask.contiguous()}, str(cache / "text.safetensors"))
    (cache / "captions.json").write_text(json.dumps(captions))
    for split, n in (("train", 8), ("val", 4), ("test", 2)):
        latents = torch.randn(n, 16, 16, 8, generator=g) * 0.1
        latents[::2] += 1.0  # "dog" scenes are brighter than "bell" scenes
        refs = torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=-1)
        save_file({"latents": latents, "references": refs}, str(cache / f"{split}.safetensors"))
        windows = [{"scene": i, "start": i % 5, "caption": 1 + i % 2, "references": [i]} for i in range(n)]
        (cache / f"{split}_windows.json").write_text(json.dumps({"width": 4, "windows": windows}))
    (cache / "summary.json").write_text(json.dumps({"train_windows": 8}))
    ReferenceEncoder(channels=(4, 4, 4, 4), layers=(1, 1, 1, 1), embedding_dim=16).save_pretrained(root / "enc")
    MelPatchCodec(n_mels=64, patch=4, downsample=2).save_pretrained(root / "codec")
    return {
        "encoder": {"out_dir": str(root / "enc")},
        "codec": {"out_dir": str(root / "codec")},
        "text_encoder": {"max_length": 8},
        "finetune": {
            "cache_dir": str(cache),
            "out_dir": str(root / "pipe"),
            "checkpoint_dir": str(root / "ckpt"),
            "report_dir": str(root / "report"),
            "unet": {"block_out_channels": [16, 32], "cross_attention": [False, True], "attention_heads": 2},
            "adapter_heads": 2,
            "batch_size": 4,
            "warmup_steps": 1,
            "lr": 1e-3,
            "mixed_precision": "no",
            "log_every": 2,
        },
    }


def with_finetune(base: dict, **finetune_overrides) -> dict:
    out = json.loads(json.dumps(base))
    out["finetune"].update(finetune_overrides)
    return out


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return root, make_cache(root)


def test_finetune_learns_and_saves_a_pipeline(tiny_setup):
    root, base = tiny_setup
    metrics = finetune(parse_params(with_finetune(base, steps=40, checkpoint_every=40, log_every=5)))
    assert metrics["steps"] == 40
    val = [float(row.split(",")[1]) for row in (root / "report" / "val_loss.csv").read_text().splitlines()[1:]]
    assert len(val) == 8 and val[-1] < 0.9 * val[0]  # fixed noise and timesteps: a real decrease
    assert (root / "report" / "loss.png").is_file() and (root / "report" / "val_loss.csv").is_file()
    pipe = SEAPPipeline.from_pretrained(root / "pipe")
    assert pipe.unet.class_embedding is not None and pipe.adapter is not None


def test_resume_continues_exactly(tiny_setup):
    root, base = tiny_setup
    straight = with_finetune(
        base, steps=8, checkpoint_every=4, log_every=100, checkpoint_dir=str(root / "c1"), out_dir=str(root / "p1")
    )
    finetune(parse_params(straight))
    # the same run, stopped after 4 steps (its checkpoint), then resumed to 8
    resumed = with_finetune(
        base, steps=8, checkpoint_every=4, log_every=100, checkpoint_dir=str(root / "c2"), out_dir=str(root / "p2")
    )
    killed = parse_params(resumed)
    import seap_model.finetune as ft

    original = ft.diffusion_loss
    calls = {"n": 0}

    def dies_after_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    ft.diffusion_loss = dies_after_four
    try:
        with pytest.raises(KeyboardInterrupt):
            finetune(killed)
    finally:
        ft.diffusion_loss = original
    assert json.loads((root / "c2" / "progress.json").read_text())["step"] == 4
    finetune(killed)
    a = load_file(str(root / "p1" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(root / "p2" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_setup):
    root, base = tiny_setup
    cfg = parse_params(
        with_finetune(
            base, steps=6, checkpoint_every=2, log_every=100, checkpoint_dir=str(root / "c3"), out_dir=str(root / "p3")
        )
    )
    import seap_model.finetune as ft

    original = ft.diffusion_loss
    calls = {"n": 0}

    def nan_at_five(*args, **kwargs):
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss

    ft.diffusion_loss = nan_at_five
    try:
        with pytest.raises(FloatingPointError, match="loss is nan at step 5"):
            finetune(cfg)
    finally:
        ft.diffusion_loss = original
    assert json.loads((root / "c3" / "progress.json").read_text())["step"] == 4


def test_train_encoder_needs_reference_waveforms_in_the_cache(tiny_setup):
    root, base = tiny_setup
    cfg = parse_params(with_finetune(base, steps=2, train_encoder=True, checkpoint_dir=str(root / "c5")))
    with pytest.raises(ValueError, match="no reference waveforms; re-run the cache stage"):
        finetune(cfg)


def test_train_encoder_is_only_for_the_hasp_encoder():
    with pytest.raises(ParamsError, match="train_encoder needs encoder.type 'hasp'"):
        parse_params({"encoder": {"type": "yamnet"}, "finetune": {"train_encoder": True}})


def test_two_process_ddp_on_cpu_keeps_ranks_identical(tiny_setup, tmp_path):
    """`accelerate launch --num_processes 2` on CPU (gloo): a few steps, both ranks end with the same weights."""
    import os
    import subprocess
    import sys

    import yaml

    _, base = tiny_setup
    cfg = with_finetune(
        base,
        steps=3,
        checkpoint_every=3,
        log_every=100,
        checkpoint_dir=str(tmp_path / "ckpt"),
        out_dir=str(tmp_path / "pipe"),
        report_dir=str(tmp_path / "report"),
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    launcher = Path(sys.executable).parent / "accelerate"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            str(launcher),
            "launch",
            "--multi_gpu",  # torchrun-style processes; with no GPU accelerate uses gloo on the CPU
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "seap_model.cli",
            "finetune",
            "--params",
            str(tmp_path / "params.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["ranks_in_sync"] is True
    assert (tmp_path / "pipe" / "model_index.json").is_file()


def test_finetune_seed_changes_the_training_run(tiny_setup):
    root, base = tiny_setup
    runs = {}
    for seed in (None, 1):
        tag = f"s{seed}"
        cfg = with_finetune(
            base,
            seed=seed,
            steps=2,
            log_every=1,
            checkpoint_dir=str(root / f"c{tag}"),
            report_dir=str(root / tag),
            out_dir=str(root / f"p{tag}"),
        )
        finetune(parse_params(cfg))
        runs[seed] = load_file(str(root / f"p{tag}" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(runs[None][k], runs[1][k]) for k in runs[None])
