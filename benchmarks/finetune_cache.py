"""Benchmark: fine-tune steps/s reading the caches vs re-encoding every input each step, same config, same run.

    python benchmarks/finetune_cache.py [--steps 8] [--batch 16] [--precision auto|bf16|no] [--compare-precision]

Re-encoding = what Tango/AudioLDM-style training does: read each clip, log-mel + codec encode, run the text
encoder on the captions and the reference encoder on the references, then the U-Net step. The cached path
reads latents/tokens/reference embeddings made once by the cache stage. Also prints how much of a cached
step is data loading. Synthetic audio, no corpus or download needed. ``--frozen embedded`` (default) uses the
embedded default's frozen models (patchify codec, MiniLM); ``--frozen paper`` uses frozen models of the paper's
sizes, built from config with random weights (AudioLDM's VAE, a FLAN-T5-large encoder), which only matters for
timing. The trained U-Net + adapter are the embedded default's in both. ``--precision`` is
``finetune.mixed_precision`` (``auto``: bf16 where the CPU computes it natively, else fp32);
``--compare-precision`` also times the cached step in the other one, for the bf16/fp32 ratio on this CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from seap_model.audio import LogMel, load_audio
from seap_model.config import Params
from seap_model.models.adapter import StyleAdapter
from seap_model.models.codec import MelPatchCodec
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.text_encoder import encode_text, load_text_encoder
from seap_model.models.unet import build_unet
from seap_model.training.batches import BatchSampler
from seap_model.training.dataset import SplitCache, Window
from seap_model.training.denoiser import StyledDenoiser
from seap_model.training.loop import native_bf16, resolve_precision
from seap_model.training.losses import diffusion_loss
from seap_model.training.optim import make_optimizer
from seap_model.training.schedulers import training_scheduler

CAPTIONS = ["a dog barking", "a bell ringing", "rain falling", "an engine running"]


def paper_sized_frozen_models(vocab_size: int):
    """AudioLDM-sized VAE codec and FLAN-T5-large-sized text encoder, random weights (timing only)."""
    from transformers import T5Config, T5EncoderModel

    from seap_model.models.codec import KLCodec

    vae = dict(
        in_channels=1,
        out_channels=1,
        latent_channels=8,
        block_out_channels=[128, 256, 512],
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        layers_per_block=2,
        norm_num_groups=32,
    )
    codec = KLCodec(vae_config=vae, n_mels=64, downsample=4, time_major=False).eval()
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=1024,
            d_kv=64,
            d_ff=2816,
            num_layers=24,
            num_heads=16,
            feed_forward_proj="gated-gelu",
        )
    ).eval()
    return codec, t5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frozen", choices=("embedded", "paper"), default="embedded")
    ap.add_argument("--precision", choices=("auto", "bf16", "no"), default="auto", help="finetune.mixed_precision")
    ap.add_argument("--compare-precision", action="store_true", help="also time the cached step in the other one")
    args = ap.parse_args()
    precision = resolve_precision(args.precision)
    torch.manual_seed(0)
    params = Params()
    fp, mel = params.finetune, params.audio.mel()
    logmel = LogMel(mel)
    codec = MelPatchCodec(n_mels=mel.n_mels, patch=params.codec.patch, downsample=4)
    tokenizer, text_model = load_text_encoder("minilm")
    if args.frozen == "paper":
        codec, text_model = paper_sized_frozen_models(tokenizer.vocab_size)
    encoder = ReferenceEncoder().eval()

    with tempfile.TemporaryDirectory() as tmp:
        clips = []
        for i in range(32):  # 32 scenes of train_seconds and their 2 s references, on disk like the real data
            scene, ref = Path(tmp) / f"s{i}.wav", Path(tmp) / f"r{i}.wav"
            sf.write(scene, 0.1 * torch.randn(int(fp.train_seconds * mel.sample_rate)).numpy(), mel.sample_rate)
            sf.write(ref, 0.1 * torch.randn(2 * mel.sample_rate).numpy(), mel.sample_rate)
            clips.append((scene, ref, CAPTIONS[i % len(CAPTIONS)]))

        # the cache stage's work, done once
        with torch.no_grad():
            latents = torch.stack([codec.encode(logmel(load_audio(s, mel.sample_rate))[None])[0] for s, _, _ in clips])
            refs = encoder(torch.stack([load_audio(r, mel.sample_rate) for _, r, _ in clips]))
        tokens, mask = encode_text(tokenizer, text_model, ["", *CAPTIONS], params.text_encoder.max_length)
        width = latents.shape[-1]
        windows = [Window(i, 0, 1 + i % len(CAPTIONS), (i,)) for i in range(len(clips))]
        sampler = BatchSampler(SplitCache(latents, refs, windows, width), tokens, mask, fp, 0)

        unet = build_unet(fp.unet, codec.latent_channels, tokens.shape[-1], tokens.shape[-1])
        model = StyledDenoiser(unet, StyleAdapter(tokens.shape[-1], refs.shape[-1], fp.adapter.heads)).train()
        opt = make_optimizer(list(model.parameters()), fp)
        sched = training_scheduler(fp)

        def step(batch: dict, precision: str = precision) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = diffusion_loss(model, sched, batch, fp.min_snr_gamma)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def reencoded_batch() -> dict:
            batch = sampler.sample(args.batch)  # same noise/timesteps/dropout draws; inputs re-encoded below
            picks = torch.randint(len(clips), (args.batch,)).tolist()
            with torch.no_grad():
                batch["latents"] = torch.stack(
                    [codec.encode(logmel(load_audio(clips[i][0], mel.sample_rate))[None])[0] for i in picks]
                )
                batch["tokens"], batch["mask"] = encode_text(
                    tokenizer, text_model, [clips[i][2] for i in picks], params.text_encoder.max_length
                )
                batch["reference"] = encoder(torch.stack([load_audio(clips[i][1], mel.sample_rate) for i in picks]))
            return batch

        other = "no" if precision == "bf16" else "bf16"
        runs = [("cached", lambda: sampler.sample(args.batch), precision), ("re-encoded", reencoded_batch, precision)]
        if args.compare_precision:
            runs.append((f"cached, {other}", lambda: sampler.sample(args.batch), other))
        timings = {}
        for name, make, arithmetic in runs:
            step(sampler.sample(args.batch), arithmetic)  # warm-up
            data = compute = 0.0
            for _ in range(args.steps):
                t0 = time.perf_counter()
                batch = make()
                t1 = time.perf_counter()
                step(batch, arithmetic)
                t2 = time.perf_counter()
                data, compute = data + t1 - t0, compute + t2 - t1
            timings[name] = (data / args.steps, compute / args.steps)

    (cd, cc), (rd, rc) = timings["cached"], timings["re-encoded"]
    print(
        f"threads {torch.get_num_threads()}, batch {args.batch}, {args.steps} steps each, "
        f"U-Net {fp.unet.block_out_channels}, precision {precision} (CPU {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16: {native_bf16()})"
    )
    print(
        f"cached:     {1 / (cd + cc):.3f} steps/s  (data {cd * 1000:.1f} ms = {100 * cd / (cd + cc):.1f}% of the step)"
    )
    print(
        f"re-encoded: {1 / (rd + rc):.3f} steps/s  (data {rd * 1000:.1f} ms = {100 * rd / (rd + rc):.1f}% of the step)"
    )
    print(f"speed-up of the caches: {(rd + rc) / (cd + cc):.2f}x")
    if args.compare_precision:
        od, oc = timings[f"cached, {other}"]
        print(f"cached, {other}: {1 / (od + oc):.3f} steps/s")
        fp32, bf16 = ((cd + cc), (od + oc)) if precision == "no" else ((od + oc), (cd + cc))
        print(f"bf16 step time / fp32 step time: {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
