"""Paper-size U-Net speed: ``python benchmarks/gpu_paper_size.py [--tiny] [--out results/gpu_paper_size.json]``.

Builds the styled U-Net at Tango's size (block channels 320/640/1280/1280, 2 layers per block, 8 heads; FLAN-T5-large
text width 1024, style vector width 1024) through ``seap_model.models.unet.build_unet``, with random weights: only
the timing counts, the outputs mean nothing. Latents are 8 x 256 x 16, what AudioLDM's VAE makes of 10.24 s (1024 mel
frames x 64 mels). Text is 64 random tokens with an all-true mask; the style vector is random. All under bf16 autocast:

(a) inference clips/s, seconds per clip, U-Net calls per clip and real-time factor (compute seconds per second of
    audio) at batch 8 for DDPM (200 steps) and DPM-Solver++ (25 steps), classifier-free guidance batched (one U-Net
    call per step on 2 x batch rows: conditional + null), in ``torch.inference_mode()``, eager and under
    ``torch.compile`` (``--no-compile`` skips it; a compile error is recorded in the JSON, not raised);
(b) training steps/s and peak memory at batch 8: AdamW (lr 1e-4), the project's Min-SNR v-prediction loss
    (``diffusion_loss``), backward, step; peak is ``torch.cuda.max_memory_allocated`` on CUDA, process max RSS on CPU;
(c) achieved TFLOP/s of the eager DPM-Solver++ run (``FlopCounterMode`` FLOPs of one U-Net call x calls / seconds)
    and its fraction of the device's vendor dense bf16 peak (table below; ``--peak-tflops`` overrides it).

Runs on CUDA when there is one. ``--tiny``: a tiny U-Net, 4 DDPM / 2 DPM-Solver++ steps, CPU in seconds (the test).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import time
from pathlib import Path

import diffusers
import torch
from torch.utils.flop_counter import FlopCounterMode

from seap_model.config import FinetuneParams, UNetParams
from seap_model.models.unet import build_unet
from seap_model.training.losses import diffusion_loss
from seap_model.training.schedulers import sampling_scheduler, training_scheduler

AUDIO_SECONDS = 10.24
GUIDANCE = 4.0  # SamplingParams' default scale; any value costs the same
SEED = 0
# Vendor dense (no sparsity) bf16 tensor-core peaks, TFLOP/s; the first key found in the device name wins.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A40": 150.0}
# fmt: off
PAPER_UNET = UNetParams(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                        cross_attention=(True, True, True, False), attention_heads=8)
TINY_UNET = UNetParams(block_out_channels=(32, 64), layers_per_block=1, cross_attention=(True, False),
                       attention_heads=2)
SIZES = {
    "paper": dict(unet=PAPER_UNET, text_dim=1024, style_dim=1024, latent=(8, 256, 16), tokens=64, batch=8,
                  ddpm_steps=200, dpm_steps=25, train_steps=10),
    "tiny": dict(unet=TINY_UNET, text_dim=32, style_dim=32, latent=(8, 16, 8), tokens=8, batch=2,
                 ddpm_steps=4, dpm_steps=2, train_steps=2),
}
# fmt: on


def timed(device: torch.device, fn, *args):
    """``fn(*args)`` and its wall-clock seconds (CUDA synchronised on both sides)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def bf16(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16)


def call_unet(unet, x: torch.Tensor, t, cond: dict) -> torch.Tensor:
    return unet(
        x, t, encoder_hidden_states=cond["tokens"], encoder_attention_mask=cond["mask"], class_labels=cond["style"]
    ).sample


def random_condition(cfg: dict, rows: int, gen: torch.Generator, device: torch.device, null_rows: int = 0) -> dict:
    """Random text tokens (all-true mask) and style vectors; the last ``null_rows`` styles are zero (dropped)."""
    style = torch.randn(rows, cfg["style_dim"], generator=gen)
    style[rows - null_rows :] = 0
    tokens = torch.randn(rows, cfg["tokens"], cfg["text_dim"], generator=gen)
    mask = torch.ones(rows, cfg["tokens"], dtype=torch.bool)
    return {"tokens": tokens.to(device), "mask": mask.to(device), "style": style.to(device)}


class Counted:
    """A U-Net that counts its calls."""

    def __init__(self, unet):
        self.unet, self.calls = unet, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.unet(*args, **kwargs)


def sample(unet, scheduler, steps: int, cfg: dict, cond: dict, device: torch.device) -> torch.Tensor:
    """Guided sampling of one batch: rows [conditional; null] in one U-Net call per step."""
    gen = torch.Generator(device).manual_seed(SEED + 2)
    scheduler.set_timesteps(steps)  # timesteps on the CPU, as diffusers' pipelines keep them for DDPM
    x = torch.randn((cfg["batch"], *cfg["latent"]), generator=gen, device=device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        conditional, null = call_unet(unet, scheduler.scale_model_input(torch.cat([x, x]), t), t, cond).float().chunk(2)
        x = scheduler.step(null + GUIDANCE * (conditional - null), t, x, generator=gen).prev_sample
    return x


def inference(unet, cfg: dict, cond: dict, device: torch.device, compiled: bool) -> dict:
    """(a): one warm-up U-Net call (for the compiled U-Net: the compilation), then both samplers, timed."""
    model = torch.compile(unet) if compiled else unet
    ddpm = training_scheduler(FinetuneParams())  # the training DDPM: v-prediction, cosine schedule
    samplers = {"ddpm": (ddpm, cfg["ddpm_steps"]), "dpm_solver++": (sampling_scheduler(ddpm), cfg["dpm_steps"])}
    b, out = cfg["batch"], {}
    with torch.inference_mode(), bf16(device):
        x = torch.randn((2 * b, *cfg["latent"]), device=device)  # an inference tensor, like the sampler's: no recompile
        _, out["warmup_s"] = timed(device, call_unet, model, x, torch.tensor(999), cond)
        for name, (scheduler, steps) in samplers.items():
            counted = Counted(model)
            latents, seconds = timed(device, sample, counted, scheduler, steps, cfg, cond, device)
            out[name] = dict(
                steps=steps, batch=b, unet_calls=counted.calls, unet_calls_per_clip=counted.calls,
                unet_rows_per_call=2 * b, seconds=seconds, clips_per_s=b / seconds, seconds_per_clip=seconds / b,
                real_time_factor=seconds / b / AUDIO_SECONDS, finite=bool(torch.isfinite(latents).all()),
            )  # fmt: skip
    return out


def training(unet, cfg: dict, device: torch.device) -> dict:
    """(b): AdamW steps on ``diffusion_loss`` (Min-SNR weighted v-prediction MSE), bf16 autocast forward."""
    fp, gen, b = FinetuneParams(), torch.Generator().manual_seed(SEED + 3), cfg["batch"]
    scheduler = training_scheduler(fp)
    batches = []
    for _ in range(cfg["train_steps"] + 1):
        data = {k: torch.randn(b, *cfg["latent"], generator=gen).to(device) for k in ("latents", "noise")}
        data["timesteps"] = torch.randint(0, fp.num_train_timesteps, (b,), generator=gen).to(device)
        batches.append({**data, **random_condition(cfg, b, gen, device)})
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)

    def step(data: dict) -> torch.Tensor:
        with bf16(device):
            loss = diffusion_loss(lambda noisy, t, d: call_unet(unet, noisy, t, d), scheduler, data, fp.min_snr_gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    step(batches[0])  # warm-up; allocates the optimizer state
    losses, seconds = timed(device, lambda: [step(data) for data in batches[1:]])
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated (reset before training)"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS since start (CPU)"
    return dict(
        steps=len(losses), batch=b, seconds=seconds, steps_per_s=len(losses) / seconds, peak_memory_bytes=peak,
        peak_memory_gib=peak / 2**30, peak_memory_kind=kind, finite=bool(torch.isfinite(torch.stack(losses)).all()),
    )  # fmt: skip


def flops_per_call(unet, cfg: dict, cond: dict, device: torch.device) -> int:
    """FLOPs of one guided U-Net call (2 x batch rows), counted by ``FlopCounterMode``."""
    x = torch.randn((2 * cfg["batch"], *cfg["latent"]), device=device)
    with torch.inference_mode(), bf16(device), FlopCounterMode(display=False) as counter:
        call_unet(unet, x, torch.tensor(500), cond)
    return counter.get_total_flops()


def device_peak(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown (not a CUDA device)"
    name = torch.cuda.get_device_name()
    key = next((k for k in PEAK_BF16_TFLOPS if re.search(rf"\b{re.escape(k)}\b", name)), None)
    if key is None:
        return None, f"unknown device {name!r} (pass --peak-tflops)"
    return PEAK_BF16_TFLOPS[key], f"vendor dense bf16 peak for {key}"


def achieved(flops: int, run: dict, peak: float | None, peak_source: str) -> dict:
    """(c): FLOPs per U-Net call x the run's calls / its seconds, against the peak."""
    tflops = flops * run["unet_calls"] / run["seconds"] / 1e12
    return dict(
        flops_per_unet_call=flops, rows_per_call=run["unet_rows_per_call"], measured_run="eager dpm_solver++",
        achieved_tflops=tflops, peak_bf16_tflops=peak, peak_source=peak_source,
        fraction_of_peak=tflops / peak if peak else None,
    )  # fmt: skip


def print_table(r: dict) -> None:
    c, t, f = r["config"], r["training"], r["flops"]
    print(
        f"\n{'TINY ' if c['tiny'] else ''}U-Net, {c['unet_params'] / 1e6:.1f} M params, on {c['device_name']}: latent "
        f"{tuple(c['latent'])}, batch {c['batch']}, bf16 autocast, guidance batched ({2 * c['batch']} rows a call)"
    )
    print(f"{'U-Net':<10}{'sampler':<14}{'steps':>6}{'calls/clip':>11}{'clips/s':>10}{'s/clip':>10}{'RTF':>10}")
    for model, runs in r["inference"].items():
        if "warmup_s" not in runs:
            print(f"{model:<10}{runs.get('error', runs.get('skipped'))}"[:200])
            continue
        for name in ("ddpm", "dpm_solver++"):
            e = runs[name]
            print(
                f"{model:<10}{name:<14}{e['steps']:>6}{e['unet_calls_per_clip']:>11}{e['clips_per_s']:>10.3f}"
                f"{e['seconds_per_clip']:>10.4f}{e['real_time_factor']:>10.4f}"
            )
        print(f"{'':<10}(warm-up call {runs['warmup_s']:.2f} s)")
    print(f"RTF: seconds of compute per second of audio, {c['audio_seconds']} s a clip ({c['audio_note']})")
    print(
        f"training: {t['steps_per_s']:.3f} steps/s at batch {t['batch']}; peak memory {t['peak_memory_gib']:.3f} GiB "
        f"({t['peak_memory_kind']})"
    )
    share = "n/a" if f["fraction_of_peak"] is None else f"{100 * f['fraction_of_peak']:.1f} % of"
    print(
        f"FLOPs: {f['flops_per_unet_call'] / 1e9:.3f} GFLOP per U-Net call; eager DPM-Solver++ achieved "
        f"{f['achieved_tflops']:.4f} TFLOP/s, {share} peak {f['peak_bf16_tflops']} ({f['peak_source']})"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny U-Net with few steps (CPU, seconds)")
    parser.add_argument("--out", type=Path, default=Path("results/gpu_paper_size.json"))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile runs")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, TFLOP/s")
    args = parser.parse_args(argv)
    cfg = SIZES["tiny" if args.tiny else "paper"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        bar = "!" * 100
        print(
            f"{bar}\nWARNING: no CUDA device. Paper-size numbers on a CPU are NOT the point of this benchmark,\n"
            f"and DDPM-200 at batch 8 will take hours. Use --tiny to check the script.\n{bar}",
            file=sys.stderr,
        )
    torch.manual_seed(SEED)
    unet = build_unet(cfg["unet"], cfg["latent"][0], cfg["text_dim"], cfg["style_dim"]).to(device).eval()
    cond = random_condition(cfg, 2 * cfg["batch"], torch.Generator().manual_seed(SEED + 1), device, cfg["batch"])
    note = "made-up: the tiny latent stands for no real duration" if args.tiny else "AudioLDM VAE: 1024 x 64 mel"
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    results = {"config": dict(
        tiny=args.tiny, device=device.type, device_name=name, torch=torch.__version__, diffusers=diffusers.__version__,
        unet=cfg["unet"].model_dump(), unet_params=sum(p.numel() for p in unet.parameters()),
        latent=list(cfg["latent"]), text_tokens=cfg["tokens"], text_dim=cfg["text_dim"], style_dim=cfg["style_dim"],
        batch=cfg["batch"],
        guidance=GUIDANCE, seed=SEED, dtype="bf16 autocast", weights="random (timing only)",
        audio_seconds=AUDIO_SECONDS, audio_note=note,
    )}  # fmt: skip
    flops = flops_per_call(unet, cfg, cond, device)
    results["inference"] = {"eager": inference(unet, cfg, cond, device, compiled=False)}
    compiled = {"skipped": "--no-compile"}
    if not args.no_compile:
        try:
            compiled = inference(unet, cfg, cond, device, compiled=True)
        except Exception as e:  # a failed compilation is a result too
            compiled = {"error": f"{type(e).__name__}: {e}"[:4000]}
    results["inference"]["compiled"] = compiled
    eager_dpm = results["inference"]["eager"]["dpm_solver++"]
    results["flops"] = achieved(flops, eager_dpm, *device_peak(device, args.peak_tflops))
    results["training"] = training(unet, cfg, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
