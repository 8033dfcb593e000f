"""The fine-tuning loop: accelerate (devices, precision, DDP, accumulation), EMA, validation, checkpoints.

Runs as one process or under ``accelerate launch`` (DDP): each rank draws its own batches (its sampler is
seeded with its rank), gradients are averaged, and only the main process writes checkpoints, holding every
rank's RNG states so that each rank resumes its own batch sequence.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from diffusers import DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from seap_model.config import FinetuneParams
from seap_model.precision import native_bf16
from seap_model.progress import progress
from seap_model.training.batches import BatchSampler
from seap_model.training.checkpoint import load_checkpoint, save_checkpoint
from seap_model.training.denoiser import StyledDenoiser
from seap_model.training.losses import diffusion_loss
from seap_model.training.optim import make_optimizer

log = logging.getLogger(__name__)


def resolve_precision(mixed_precision: str) -> str:
    """``finetune.mixed_precision`` as accelerate takes it: ``auto`` is bf16 where the device computes it natively,
    else fp16 on a GPU and fp32 (``no``) on a CPU. An explicit ``bf16`` is obeyed, with a warning where it is slow
    (emulated bf16 measured 38 s/step against 3.6 s/step in fp32 on one AVX2 thread)."""
    if mixed_precision == "auto":
        chosen = "bf16" if native_bf16() else ("fp16" if torch.cuda.is_available() else "no")
        log.info("finetune.mixed_precision auto: %s on this %s", chosen, "GPU" if torch.cuda.is_available() else "CPU")
        return chosen
    if mixed_precision == "bf16" and not native_bf16():
        log.warning(
            "finetune.mixed_precision bf16 on a device without native bf16 (CPU capability %s): it is emulated and "
            "far slower than fp32; `auto` would choose fp32 here",
            torch.backends.cpu.get_cpu_capability(),
        )
    return mixed_precision


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator for this process: GPU(s) when present, gloo DDP when several CPU processes are launched.
    ``mixed_precision`` is resolved first (``resolve_precision``); the one in use is ``accelerator.mixed_precision``."""
    # Several processes and no CUDA (e.g. `accelerate launch --multi_gpu --num_processes 2` on a CPU machine):
    # accelerate only picks its multi-CPU (gloo) mode when told to use the CPU.
    distributed_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # accelerate keeps one process-wide state; a second finetune in the same process (a Prefect worker, tests)
    # may ask for another precision, so the precision part of that state is reset (the process group is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=resolve_precision(mixed_precision), cpu=distributed_cpu)


@dataclass
class Objective:
    """What ``train_denoiser`` minimises: ``loss(model, batch)``; ``after_step()`` runs after each optimiser step
    (a consistency target's moving average); ``modules``: more networks its checkpoints hold (that target)."""

    loss: Callable[[torch.nn.Module, dict], torch.Tensor]
    after_step: Callable[[], None] = lambda: None
    modules: list[torch.nn.Module] = field(default_factory=list)
    name: str = "finetune"


def denoising_objective(scheduler: DDPMScheduler, fp: FinetuneParams) -> Objective:
    """The fine-tune's objective: Min-SNR weighted denoising (``diffusion_loss``)."""
    return Objective(lambda model, batch: diffusion_loss(model, scheduler, batch, fp.min_snr_gamma))


@dataclass
class TrainResult:
    history: dict
    steps: int
    resumed_from: int  # the checkpoint step training continued from (0: a fresh start)

    def metrics(self) -> dict:
        """The steps and the last logged training and validation losses (None where none was logged)."""
        train, val = self.history["train"], self.history["val"]
        return {
            "steps": self.steps,
            "final_train_loss": train[-1][1] if train else None,
            "final_val_loss": val[-1][1] if val else None,
        }

    def run_record(self, seconds: float, mixed_precision: str) -> dict:
        """What differs between identical runs (``run.json``): resume point, wall-clock time, precision used."""
        trained = self.steps - self.resumed_from
        return {
            "resumed_from_step": self.resumed_from,
            "steps_trained": trained,
            "seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / max(1, trained), 4),
            "mixed_precision": mixed_precision,
        }


def accumulate_gradients(model, micro_batches: list[dict], objective: Objective, accelerator: Accelerator) -> float:
    """Backward over ``micro_batches`` (gradients averaged over them, DDP-synchronised on the last only);
    returns the mean loss. Raises FloatingPointError on a non-finite loss, before it reaches the weights."""
    total = 0.0
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            with accelerator.autocast():
                loss = objective.loss(model, batch) / len(micro_batches)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()}")
            accelerator.backward(loss)
        total += loss.item()
    return total


def rng_rows(generator: torch.Generator, accelerator: Accelerator) -> dict[str, torch.Tensor]:
    """Every rank's batch-sampler and global RNG states, row ``r`` from rank ``r``, for the checkpoint. A
    collective: every rank calls it (one process: its own states as one row)."""
    own = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    return {k: accelerator.gather(v[None].to(accelerator.device)).cpu() for k, v in own.items()}


@torch.no_grad()
def validation_loss(model, objective: Objective, ema, trainable, batch, accelerator) -> float:
    """Loss of the EMA weights (the current ones without EMA) on the fixed validation batch."""
    if ema is not None:
        ema.store(trainable)
        ema.copy_to(trainable)
    model.eval()
    with accelerator.autocast():
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        loss = objective.loss(model, batch).item()
    if ema is not None:
        ema.restore(trainable)
    return loss


def train_denoiser(
    model: StyledDenoiser,
    groups: list[dict],
    trainable: list[torch.nn.Parameter],
    objective: Objective,
    sampler: BatchSampler,
    val_batch: dict | None,
    fp: FinetuneParams,
    accelerator: Accelerator,
    fingerprint: dict,
) -> TrainResult:
    """Train ``model`` for ``fp.steps`` optimiser steps, resuming ``fp.checkpoint_dir`` if it was made from the
    same ``fingerprint``, on ``objective``; afterwards the trainable weights hold the EMA weights (when EMA is on)."""
    ckpt_dir = Path(fp.checkpoint_dir)
    optimizer = make_optimizer(groups, fp)
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, fp.warmup_steps, fp.steps)
    ema = EMAModel(trainable, decay=fp.ema_decay) if fp.ema_decay > 0 else None
    state = load_checkpoint(
        ckpt_dir,
        fingerprint,
        [model, *objective.modules],
        optimizer,
        lr_schedule,
        ema,
        sampler.generator,
        accelerator.process_index,
        accelerator.num_processes,
    )
    step, history = (state["step"], state["history"]) if state else (0, {"train": [], "val": []})
    resumed_from = last_good = step
    if state:
        log.info("resuming %s at step %d of %d", ckpt_dir, step, fp.steps)
    else:
        log.info("training from step 0 of %d", fp.steps)

    ddp_model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    if ema is not None:
        ema.to(device)  # shadow weights live beside the (now moved) model
    bar = progress(total=fp.steps, initial=step, desc=objective.name, unit="step", enabled=accelerator.is_main_process)
    running: list[float] = []
    while step < fp.steps:
        ddp_model.train()
        micro = [
            {k: v.to(device) for k, v in sampler.sample(fp.batch_size).items()} for _ in range(fp.gradient_accumulation)
        ]
        try:
            loss = accumulate_gradients(ddp_model, micro, objective, accelerator)
        except FloatingPointError as exc:
            raise FloatingPointError(
                f"{objective.name}: {exc} at step {step + 1}; stopped. The last good checkpoint ({ckpt_dir}, "
                f"step {last_good}) is intact."
            ) from None
        accelerator.clip_grad_norm_(trainable, fp.grad_clip)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(trainable)
        objective.after_step()
        step += 1
        running.append(loss)
        bar.update(1)
        if step % fp.log_every == 0 or step == fp.steps:
            history["train"].append([step, sum(running) / len(running), lr_schedule.get_last_lr()[0]])
            running = []
            line = f"step {step}/{fp.steps}: train loss {history['train'][-1][1]:.4f}"
            if val_batch is not None:
                history["val"].append([step, validation_loss(model, objective, ema, trainable, val_batch, accelerator)])
                line += f", val loss {history['val'][-1][1]:.4f}"
            bar.set_postfix(loss=f"{history['train'][-1][1]:.4f}")
            if accelerator.is_main_process:
                log.info("%s %s", objective.name, line)
        if step % fp.checkpoint_every == 0 or step == fp.steps:
            rng = rng_rows(sampler.generator, accelerator)
            if accelerator.is_main_process:
                save_checkpoint(
                    ckpt_dir, fingerprint, step, history, [model, *objective.modules], optimizer, lr_schedule, ema, rng
                )
            accelerator.wait_for_everyone()
            last_good = step
    bar.close()
    if ema is not None:
        ema.copy_to(trainable)
    return TrainResult(history, step, resumed_from)
