"""The finetune stage: train the adapter and the style-modulated U-Net on the cached latents, text and references.

Inputs come only from the cache stage (latents, caption tokens, reference embeddings), so no frozen
model runs during training. The result is a complete ``SEAPPipeline`` saved with ``save_pretrained``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from seap_model.batches import BatchSampler, fixed_val_batch
from seap_model.cache import SplitCache, load_split, load_text_cache
from seap_model.checkpoint import load_checkpoint, save_checkpoint
from seap_model.config import FinetuneParams, Params
from seap_model.models.adapter import StyleAdapter
from seap_model.models.codec import load_codec
from seap_model.models.reference_encoder import ReferenceEncoder, load_reference_encoder
from seap_model.models.text_encoder import load_text_encoder
from seap_model.models.unet import build_unet
from seap_model.models.vocoder import make_vocoder
from seap_model.pipeline import SEAPPipeline
from seap_model.plots import plot_losses

log = logging.getLogger(__name__)

# DPM-Solver++ on the cosine schedule needs lambda clipped at the noisy end, or the first steps explode.
LAMBDA_MIN_CLIPPED = -5.1


def training_scheduler(fp: FinetuneParams) -> DDPMScheduler:
    # clip_sample=False: latents are unit-variance, not images in [-1, 1].
    return DDPMScheduler(
        num_train_timesteps=fp.num_train_timesteps,
        beta_schedule=fp.beta_schedule,
        beta_start=fp.beta_start,
        beta_end=fp.beta_end,
        prediction_type=fp.prediction_type,
        clip_sample=False,
    )


def sampling_scheduler(train: DDPMScheduler) -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler.from_config(
        train.config, algorithm_type="dpmsolver++", solver_order=2, lambda_min_clipped=LAMBDA_MIN_CLIPPED
    )


class StyledDenoiser(torch.nn.Module):
    """The trained part as one module (one DDP wrapper, one checkpoint): [encoder ->] adapter -> style -> U-Net.

    With a ``reference_encoder`` (``finetune.train_encoder``) the references are embedded from their waveforms
    at every step so the encoder is trained with the adapter; its BatchNorm statistics stay those of
    pretraining (it is kept in eval mode), since fine-tuning batches are small and mostly one event each.
    """

    def __init__(self, unet, adapter: StyleAdapter | None, reference_encoder: ReferenceEncoder | None = None):
        super().__init__()
        self.unet, self.adapter, self.reference_encoder = unet, adapter, reference_encoder

    def train(self, mode: bool = True) -> StyledDenoiser:
        super().train(mode)
        if self.reference_encoder is not None:
            self.reference_encoder.eval()
        return self

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        style = None
        if self.adapter is not None:
            reference = batch["reference"]
            if self.reference_encoder is not None:  # references were checked when SERST was built
                reference = self.reference_encoder(batch["reference_audio"], validate=False)
            style = self.adapter(batch["tokens"], batch["mask"], reference, batch["keep_reference"])
        return self.unet(
            noisy, t, encoder_hidden_states=batch["tokens"], encoder_attention_mask=batch["mask"], class_labels=style
        ).sample


def diffusion_loss(model, scheduler: DDPMScheduler, batch: dict, min_snr_gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weighted denoising loss for epsilon or v prediction."""
    x0, noise, t = batch["latents"], batch["noise"], batch["timesteps"]
    noisy = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    mse = (model(noisy, t, batch).float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=min_snr_gamma)
    weight = clipped / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else clipped / snr
    return (weight * mse).mean()


def trainable_parameters(unet, adapter, which: str) -> list[torch.nn.Parameter]:
    """Adapter + whole U-Net (the paper), or adapter + only what turns (timestep, style) into norm modulation."""
    if which == "adapter_unet":
        chosen = list(unet.parameters())
    else:
        if unet.class_embedding is None:
            raise ValueError("finetune.trainable 'adapter_modulation' needs the style path (style must not be 'off')")
        chosen = [p for n, p in unet.named_parameters() if n.startswith("class_embedding.") or ".time_emb_proj." in n]
    chosen += list(adapter.parameters()) if adapter is not None else []
    wanted = {id(p) for p in chosen}
    for p in unet.parameters():
        p.requires_grad_(id(p) in wanted)
    return chosen


def make_optimizer(parameters: list, fp: FinetuneParams) -> torch.optim.Optimizer:
    """Adafactor or AdamW over ``parameters`` (tensors, or param groups that may set their own ``lr``)."""
    if fp.optimizer == "adafactor":  # the paper's; fixed learning rate, the schedule comes from the LR scheduler
        from transformers.optimization import Adafactor

        return Adafactor(
            parameters,
            lr=fp.lr,
            weight_decay=fp.weight_decay,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
        )
    return torch.optim.AdamW(parameters, lr=fp.lr, weight_decay=fp.weight_decay)


def params_fingerprint(params: Params) -> str:
    """Hash of everything that makes a checkpoint resumable (same finetune params, same data)."""
    blob = json.dumps({"finetune": params.finetune.model_dump(mode="json"), "seed": params.seed}, sort_keys=True)
    summary = Path(params.finetune.cache_dir) / "summary.json"
    blob += summary.read_text() if summary.is_file() else ""
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finetune(params: Params) -> dict:
    """Train, checkpointing as it goes (and resuming a matching checkpoint), then save the pipeline.

    Runs as one process or under ``accelerate launch`` (DDP): each rank draws its own batches, gradients are
    averaged, and only the main process writes checkpoints and outputs.
    """
    fp = params.finetune
    seed = params.seed if fp.seed is None else fp.seed  # training seed; the validation batch keeps params.seed
    torch.manual_seed(seed)
    # Several processes and no CUDA (e.g. `accelerate launch --multi_gpu --num_processes 2` on a CPU machine):
    # accelerate only picks its multi-CPU (gloo) mode when told to use the CPU.
    distributed_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # accelerate keeps one process-wide state; a second finetune in the same process (a Prefect worker, tests)
    # may ask for another precision, so the precision part of that state is reset (the process group is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=fp.mixed_precision, cpu=distributed_cpu)
    ckpt_dir = Path(fp.checkpoint_dir)
    train = load_split(fp.cache_dir, "train")
    tokens, mask, _ = load_text_cache(fp.cache_dir)
    text_dim, ref_dim = tokens.shape[-1], train.references.shape[-1]

    styled = fp.style != "off"
    unet = build_unet(fp.unet, train.latents.shape[1], text_dim, text_dim if styled else None)
    adapter = StyleAdapter(text_dim, ref_dim, fp.adapter_heads, fp.style) if styled else None
    encoder = trainable_encoder(params, train) if fp.train_encoder else None
    model = StyledDenoiser(unet, adapter, encoder)
    trainable = trainable_parameters(unet, adapter, fp.trainable)
    groups: list[dict] = [{"params": trainable}]
    if encoder is not None:
        groups.append({"params": list(encoder.parameters()), "lr": fp.lr * fp.encoder_lr_scale})
        trainable = trainable + groups[-1]["params"]
    if fp.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    optimizer = make_optimizer(groups, fp)
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, fp.warmup_steps, fp.steps)
    ema = EMAModel(trainable, decay=fp.ema_decay) if fp.ema_decay > 0 else None
    scheduler = training_scheduler(fp)
    sampler = BatchSampler(train, tokens, mask, fp, seed + 1000 * accelerator.process_index)
    val_batch = fixed_val_batch(load_split(fp.cache_dir, "val"), tokens, mask, fp, params.seed)
    log.info(
        "U-Net %.2f M params, adapter %.2f M params, reference encoder %s, %.2f M trainable, %d train windows",
        sum(p.numel() for p in unet.parameters()) / 1e6,
        sum(p.numel() for p in adapter.parameters()) / 1e6 if adapter else 0.0,
        "trained" if encoder is not None else "frozen (cached embeddings)",
        sum(p.numel() for p in trainable) / 1e6,
        len(train.windows),
    )

    fingerprint = params_fingerprint(params)
    state = load_checkpoint(ckpt_dir, fingerprint, [model], optimizer, lr_schedule, ema, sampler.generator)
    step, history = (state["step"], state["history"]) if state else (0, {"train": [], "val": []})
    if state:
        log.info("resuming from %s at step %d", ckpt_dir, step)
    last_good = step

    ddp_model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    if ema is not None:
        ema.to(device)  # shadow weights live beside the (now moved) model
    start = time.perf_counter()
    bar = tqdm(total=fp.steps, initial=step, desc="finetune", unit="step", disable=not accelerator.is_main_process)
    running = []
    while step < fp.steps:
        ddp_model.train()
        total = 0.0
        for micro in range(fp.gradient_accumulation):
            batch = {k: v.to(device) for k, v in sampler.sample(fp.batch_size).items()}
            last = micro == fp.gradient_accumulation - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(ddp_model):
                with accelerator.autocast():
                    loss = diffusion_loss(ddp_model, scheduler, batch, fp.min_snr_gamma) / fp.gradient_accumulation
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"finetune: loss is {loss.item()} at step {step + 1}; stopped. The last good checkpoint "
                        f"({ckpt_dir}, step {last_good}) is intact."
                    )
                accelerator.backward(loss)
            total += loss.item()
        accelerator.clip_grad_norm_(trainable, fp.grad_clip)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(trainable)
        step += 1
        running.append(total)
        bar.update(1)
        if step % fp.log_every == 0 or step == fp.steps:
            history["train"].append([step, sum(running) / len(running), lr_schedule.get_last_lr()[0]])
            bar.set_postfix(loss=f"{history['train'][-1][1]:.4f}")
            running = []
            if val_batch is not None:
                history["val"].append(
                    [step, validation_loss(model, scheduler, ema, trainable, val_batch, fp, accelerator)]
                )
        if step % fp.checkpoint_every == 0 or step == fp.steps:
            if accelerator.is_main_process:
                save_checkpoint(
                    ckpt_dir, fingerprint, step, history, [model], optimizer, lr_schedule, ema, sampler.generator
                )
            accelerator.wait_for_everyone()
            last_good = step
    bar.close()
    seconds = time.perf_counter() - start

    if ema is not None:
        ema.copy_to(trainable)
    digests = gather_object([weights_digest(model)])
    metrics = {
        "steps": step,
        "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, step - (state["step"] if state else 0)), 4),
        "final_train_loss": history["train"][-1][1] if history["train"] else None,
        "final_val_loss": history["val"][-1][1] if history["val"] else None,
        "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 3),
        "processes": accelerator.num_processes,
        "ranks_in_sync": len(set(digests)) == 1,
    }
    if accelerator.is_main_process:
        pipe = assemble_pipeline(
            params,
            unet.float().cpu(),
            adapter.float().cpu() if adapter else None,
            scheduler,
            encoder.float().cpu() if encoder is not None else None,
        )
        pipe.save_pretrained(fp.out_dir)
        report = Path(fp.report_dir)
        report.mkdir(parents=True, exist_ok=True)
        write_history(report, history)
        (report / "metrics.json").write_text(json.dumps(metrics, indent=2))
    accelerator.wait_for_everyone()
    return metrics


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of all weights (to check that every process ends with the same model)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def validation_loss(model, scheduler, ema, trainable, batch, fp, accelerator) -> float:
    """Loss of the EMA weights (the current ones without EMA) on the fixed validation batch."""
    if ema is not None:
        ema.store(trainable)
        ema.copy_to(trainable)
    model.eval()
    with accelerator.autocast():
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        loss = diffusion_loss(model, scheduler, batch, fp.min_snr_gamma).item()
    if ema is not None:
        ema.restore(trainable)
    return loss


def trainable_encoder(params: Params, train: SplitCache) -> ReferenceEncoder:
    """The pretrained H/ASP encoder, set up to be fine-tuned with the adapter (``finetune.train_encoder``)."""
    if train.reference_audio is None:
        raise ValueError(
            f"finetune.train_encoder: {params.finetune.cache_dir} has no reference waveforms; "
            "re-run the cache stage with finetune.train_encoder: true"
        )
    encoder = load_reference_encoder(params.encoder.out_dir)
    if not isinstance(encoder, ReferenceEncoder):
        raise ValueError(f"finetune.train_encoder: {params.encoder.out_dir} holds a {type(encoder).__name__}")
    return encoder.requires_grad_(True)


def assemble_pipeline(
    params: Params, unet, adapter, train_scheduler: DDPMScheduler, reference_encoder: ReferenceEncoder | None = None
) -> SEAPPipeline:
    """Put the trained parts together with the frozen ones (and the pretrained encoder unless it was trained)."""
    tokenizer, text_model = load_text_encoder(params.text_encoder.name)
    v = params.vocoder
    if reference_encoder is None:
        reference_encoder = load_reference_encoder(params.encoder.out_dir)
    return SEAPPipeline(
        unet=unet.eval(),
        scheduler=sampling_scheduler(train_scheduler),
        text_encoder=text_model,
        tokenizer=tokenizer,
        reference_encoder=reference_encoder.eval(),
        adapter=adapter.eval() if adapter is not None else None,
        codec=load_codec(params.codec.out_dir),
        vocoder=make_vocoder(v.type, v.pretrained, params.audio.mel(), v.griffin_lim_iters),
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
