"""The finetune stage: train the adapter and the style-modulated U-Net on the cached latents, text and references.

Inputs come only from the cache stage (latents, caption tokens, reference embeddings), so no frozen
model runs during training. The result is a complete ``SEAPPipeline`` saved with ``save_pretrained``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from seap_model.cache import SplitCache, load_split, load_text_cache
from seap_model.checkpoint import load_checkpoint, save_checkpoint
from seap_model.config import FinetuneParams, Params
from seap_model.models.adapter import StyleAdapter
from seap_model.models.codec import load_codec
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.text_encoder import load_text_encoder
from seap_model.models.unet import build_unet
from seap_model.models.vocoder import GriffinLimVocoder
from seap_model.pipeline import SEAPPipeline
from seap_model.plots import plot_losses

log = logging.getLogger(__name__)

# DPM-Solver++ on the cosine schedule needs lambda clipped at the noisy end, or the first steps explode.
LAMBDA_MIN_CLIPPED = -5.1


def training_scheduler(fp: FinetuneParams) -> DDPMScheduler:
    # clip_sample=False: latents are unit-variance, not images in [-1, 1].
    return DDPMScheduler(
        num_train_timesteps=fp.num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=fp.prediction_type,
        clip_sample=False,
    )


def sampling_scheduler(train: DDPMScheduler) -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler.from_config(
        train.config, algorithm_type="dpmsolver++", solver_order=2, lambda_min_clipped=LAMBDA_MIN_CLIPPED
    )


class BatchSampler:
    """Draws training batches (window, reference, condition dropout) from a seeded generator."""

    def __init__(self, cache: SplitCache, tokens: torch.Tensor, mask: torch.Tensor, fp: FinetuneParams, seed: int):
        if not cache.windows:
            raise ValueError("the train split has no captioned windows: nothing to fine-tune on")
        self.cache, self.tokens, self.mask, self.fp = cache, tokens, mask, fp
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        g = self.generator
        cache, width = self.cache, self.cache.width
        picks = torch.randint(len(cache.windows), (batch_size,), generator=g).tolist()
        u = torch.rand(batch_size, generator=g)
        drop_both = u < self.fp.drop_both
        drop_style = (u >= self.fp.drop_both) & (u < self.fp.drop_both + self.fp.drop_style)
        latents, captions, refs, keep = [], [], [], []
        for i, w in enumerate(picks):
            win = cache.windows[w]
            latents.append(cache.latents[win.scene, :, :, win.start : win.start + width])
            captions.append(0 if drop_both[i] else win.caption)
            r = int(torch.randint(len(win.references), (1,), generator=g)) if win.references else -1
            refs.append(cache.references[win.references[r]] if r >= 0 else torch.zeros(cache.references.shape[-1]))
            keep.append(r >= 0 and not bool(drop_both[i] or drop_style[i]))
        idx = torch.tensor(captions)
        return {
            "latents": torch.stack(latents),
            "tokens": self.tokens[idx],
            "mask": self.mask[idx],
            "reference": torch.stack(refs),
            "keep_reference": torch.tensor(keep),
            "noise": torch.randn(batch_size, *latents[0].shape, generator=g),
            "timesteps": torch.randint(self.fp.num_train_timesteps, (batch_size,), generator=g),
        }


def diffusion_loss(unet, adapter, scheduler: DDPMScheduler, batch: dict, min_snr_gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weighted denoising loss for epsilon or v prediction."""
    x0, noise, t = batch["latents"], batch["noise"], batch["timesteps"]
    noisy = scheduler.add_noise(x0, noise, t)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(x0, noise, t)
    else:
        target = noise
    style = None
    if adapter is not None:
        style = adapter(batch["tokens"], batch["mask"], batch["reference"], batch["keep_reference"])
    pred = unet(
        noisy, t, encoder_hidden_states=batch["tokens"], encoder_attention_mask=batch["mask"], class_labels=style
    ).sample
    mse = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=min_snr_gamma)
    weight = clipped / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else clipped / snr
    return (weight * mse).mean()


def fixed_val_batch(cache: SplitCache, tokens, mask, fp: FinetuneParams, seed: int, size: int = 64) -> dict | None:
    """Validation batch with fixed windows, timesteps and noise, conditions kept (comparable across runs)."""
    if not cache.windows:
        return None
    g = torch.Generator().manual_seed(seed + 1)
    windows = cache.windows[:size]
    n = len(windows)
    ref_dim = cache.references.shape[-1]
    return {
        "latents": torch.stack([cache.latents[w.scene, :, :, w.start : w.start + cache.width] for w in windows]),
        "tokens": tokens[[w.caption for w in windows]],
        "mask": mask[[w.caption for w in windows]],
        "reference": torch.stack(
            [cache.references[w.references[0]] if w.references else torch.zeros(ref_dim) for w in windows]
        ),
        "keep_reference": torch.tensor([bool(w.references) for w in windows]),
        "noise": torch.randn(n, *cache.latents.shape[1:3], cache.width, generator=g),
        "timesteps": torch.linspace(0, fp.num_train_timesteps - 1, n).round().long(),
    }


def params_fingerprint(params: Params) -> str:
    """Hash of everything that makes a checkpoint resumable (same finetune params, same data)."""
    blob = json.dumps({"finetune": params.finetune.model_dump(mode="json"), "seed": params.seed}, sort_keys=True)
    summary = Path(params.finetune.cache_dir) / "summary.json"
    blob += summary.read_text() if summary.is_file() else ""
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finetune(params: Params) -> dict:
    """Train, checkpointing as it goes (and resuming a matching checkpoint), then save the pipeline."""
    fp = params.finetune
    torch.manual_seed(params.seed)
    accelerator = Accelerator(mixed_precision=fp.mixed_precision)
    out = Path(fp.out_dir)
    ckpt_dir = Path(fp.checkpoint_dir)
    train = load_split(fp.cache_dir, "train")
    val = load_split(fp.cache_dir, "val")
    tokens, mask, _ = load_text_cache(fp.cache_dir)
    text_dim, ref_dim = tokens.shape[-1], train.references.shape[-1]
    latent_channels = train.latents.shape[1]

    styled = fp.style != "off"
    unet = build_unet(fp.unet, latent_channels, text_dim, text_dim if styled else None)
    adapter = StyleAdapter(text_dim, ref_dim, fp.adapter_heads, fp.style) if styled else None
    modules = [m for m in (unet, adapter) if m is not None]
    trainable = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(trainable, lr=fp.lr, weight_decay=fp.weight_decay)
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, fp.warmup_steps, fp.steps)
    ema = EMAModel(trainable, decay=fp.ema_decay)
    scheduler = training_scheduler(fp)
    sampler = BatchSampler(train, tokens, mask, fp, params.seed)
    val_batch = fixed_val_batch(val, tokens, mask, fp, params.seed)
    log.info(
        "U-Net %.2f M params, adapter %.2f M params, %d train windows",
        sum(p.numel() for p in unet.parameters()) / 1e6,
        sum(p.numel() for p in adapter.parameters()) / 1e6 if adapter else 0.0,
        len(train.windows),
    )

    fingerprint = params_fingerprint(params)
    state = load_checkpoint(ckpt_dir, fingerprint, modules, optimizer, lr_schedule, ema, sampler.generator)
    step, history = (state["step"], state["history"]) if state else (0, {"train": [], "val": []})
    if state:
        log.info("resuming from %s at step %d", ckpt_dir, step)

    unet, optimizer = accelerator.prepare(unet, optimizer)
    if adapter is not None:
        adapter = accelerator.prepare(adapter)
    device = accelerator.device
    start = time.perf_counter()
    bar = tqdm(total=fp.steps, initial=step, desc="finetune", unit="step")
    running = []
    while step < fp.steps:
        unet.train()
        batch = {k: v.to(device) for k, v in sampler.sample(fp.batch_size).items()}
        with accelerator.autocast():
            loss = diffusion_loss(unet, adapter, scheduler, batch, fp.min_snr_gamma)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"finetune: loss is {float(loss)} at step {step + 1}; stopped. The last good checkpoint "
                f"({ckpt_dir}, step {state['step'] if state else 0}) is intact."
            )
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, fp.grad_clip)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(trainable)
        step += 1
        running.append(loss.item())
        bar.update(1)
        if step % fp.log_every == 0 or step == fp.steps:
            history["train"].append([step, sum(running) / len(running), lr_schedule.get_last_lr()[0]])
            bar.set_postfix(loss=f"{history['train'][-1][1]:.4f}")
            running = []
            if val_batch is not None:
                history["val"].append(
                    [step, validation_loss(unet, adapter, scheduler, ema, trainable, val_batch, fp, accelerator)]
                )
        if step % fp.checkpoint_every == 0 or step == fp.steps:
            save_checkpoint(
                ckpt_dir, fingerprint, step, history, modules, optimizer, lr_schedule, ema, sampler.generator
            )
            state = {"step": step}
    bar.close()
    seconds = time.perf_counter() - start

    ema.copy_to(trainable)
    unet = accelerator.unwrap_model(unet).float().cpu()
    adapter = accelerator.unwrap_model(adapter).float().cpu() if adapter is not None else None
    pipe = assemble_pipeline(params, unet, adapter, scheduler)
    pipe.save_pretrained(out)
    report = Path(fp.report_dir)
    report.mkdir(parents=True, exist_ok=True)
    write_history(report, history)
    metrics = {
        "steps": step,
        "train_seconds": round(seconds, 1),
        "final_train_loss": history["train"][-1][1] if history["train"] else None,
        "final_val_loss": history["val"][-1][1] if history["val"] else None,
        "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 3),
    }
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


@torch.no_grad()
def validation_loss(unet, adapter, scheduler, ema, trainable, batch, fp, accelerator) -> float:
    """Loss of the EMA weights on the fixed validation batch."""
    ema.store(trainable)
    ema.copy_to(trainable)
    unet.eval()
    device = accelerator.device
    with accelerator.autocast():
        loss = float(
            diffusion_loss(unet, adapter, scheduler, {k: v.to(device) for k, v in batch.items()}, fp.min_snr_gamma)
        )
    ema.restore(trainable)
    return loss


def assemble_pipeline(params: Params, unet, adapter, train_scheduler: DDPMScheduler) -> SEAPPipeline:
    """Put the trained parts together with the frozen ones into a SEAPPipeline."""
    tokenizer, text_model = load_text_encoder(params.text_encoder.name)
    a = params.audio
    return SEAPPipeline(
        unet=unet.eval(),
        scheduler=sampling_scheduler(train_scheduler),
        text_encoder=text_model,
        tokenizer=tokenizer,
        reference_encoder=ReferenceEncoder.from_pretrained(params.encoder.out_dir).eval(),
        adapter=adapter.eval() if adapter is not None else None,
        codec=load_codec(params.codec.out_dir),
        vocoder=GriffinLimVocoder(a.sample_rate, a.n_fft, a.hop_length, a.n_mels, a.f_min, a.f_max),
        max_text_length=params.text_encoder.max_length,
    )


def write_history(out: Path, history: dict) -> None:
    """Loss curves as CSV (DVC plots) and a PNG."""
    with open(out / "loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "train_loss", "lr"])
        w.writerows(history["train"])
    with open(out / "val_loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "val_loss"])
        w.writerows(history["val"])
    plot_losses(history, out / "loss.png")
