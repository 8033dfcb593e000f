"""Tiny synthetic fine-tuning inputs shared by the training tests: a cache whose latents depend on the caption."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from seap_model.models.codec import MelPatchCodec
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.text_encoder import encode_text, load_text_encoder
from seap_model.models.vocoder import LearnedVocoder


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
        frames = torch.randn(
            n, 5, 32, generator=torch.Generator().manual_seed(n)
        ).half()  # the encoder's frame width (4 channels x 8 bands)
        tensors = {"latents": latents, "references": refs, "reference_frames": frames}
        save_file(tensors, str(cache / f"{split}.safetensors"))
        windows = [{"scene": i, "start": i % 5, "caption": 1 + i % 2, "references": [i]} for i in range(n)]
        (cache / f"{split}_windows.json").write_text(json.dumps({"width": 4, "windows": windows}))
    (cache / "summary.json").write_text(json.dumps({"train_windows": 8}))
    ReferenceEncoder(channels=(4, 4, 4, 4), layers=(1, 1, 1, 1), embedding_dim=16).save_pretrained(root / "enc")
    MelPatchCodec(n_mels=64, patch=4, downsample=2).save_pretrained(root / "codec")
    # the default vocoder kind (learned), untrained and tiny: never the repo's models/vocoder (absent in a clone)
    LearnedVocoder(channels=8, layers=1, griffin_lim_iters=2).save_pretrained(root / "vocoder")
    return {
        "encoder": {"out_dir": str(root / "enc")},
        "codec": {"out_dir": str(root / "codec")},
        "vocoder": {"out_dir": str(root / "vocoder")},
        "text_encoder": {"max_length": 8},
        "finetune": {
            "cache_dir": str(cache),
            "out_dir": str(root / "pipe"),
            "checkpoint_dir": str(root / "ckpt"),
            "report_dir": str(root / "report"),
            "baseline_dir": str(root / "text_only"),  # never the repo's models/text_only
            "unet": {"block_out_channels": [16, 32], "cross_attention": [False, True], "attention_heads": 2},
            "adapter": {"heads": 2},
            "batch_size": 4,
            "warmup_steps": 1,
            "lr": 1e-3,
            "mixed_precision": "no",
            "log_every": 2,
        },
    }


def with_finetune(base: dict, **finetune_overrides) -> dict:
    """``base`` with finetune overrides; the text-only baseline is off unless a test asks for it."""
    out = json.loads(json.dumps(base))
    out["finetune"].update({"baseline": False, **finetune_overrides})
    return out


def generate_pair(pipe, reference, seed: int = 0, prompts=("a dog barking", "a bell ringing"), **kwargs):
    """Two short clips (few steps) from a pipeline, seeded: the fast-test generation call."""
    return pipe(
        list(prompts),
        reference,
        duration=0.5,
        num_inference_steps=3,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(seed),
        progress=False,
        **kwargs,
    )


def dies_during_step(step: int):
    """A stand-in for ``training.losses.diffusion_loss`` that raises KeyboardInterrupt in training step ``step``
    (validation losses do not count): a run killed there keeps the checkpoints saved before it."""
    import seap_model.training.losses as losses

    calls, original = {"n": 0}, losses.diffusion_loss

    def loss(model, *args, **kwargs):
        calls["n"] += model.training
        if calls["n"] >= step:
            raise KeyboardInterrupt
        return original(model, *args, **kwargs)

    return loss
