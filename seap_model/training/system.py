"""One fine-tuned system end to end: build it from the cache, train it (resuming a checkpoint of the same
inputs), save its ``SEAPPipeline`` and its loss curves. The finetune stage trains SEAP this way and, alike,
the text-only baseline."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from seap_model.config import Params
from seap_model.plots import plot_losses
from seap_model.training.batches import BatchSampler, fixed_val_batch
from seap_model.training.builders import assemble_pipeline, build_denoiser
from seap_model.training.dataset import load_split, load_text_cache
from seap_model.training.loop import denoising_objective, make_accelerator, train_denoiser
from seap_model.training.schedulers import training_scheduler

log = logging.getLogger(__name__)


def train_system(params: Params, name: str, fingerprint: Mapping[str, str]) -> tuple[dict, dict]:
    """Train one system (``seap`` or ``text_only``: ``params.finetune`` says which) with its own checkpoints
    (``<checkpoint_dir>/<name>``) and curves (the text-only baseline's under ``<report_dir>/text_only``).
    ``fingerprint``: the finetune stage's (``seap_model.fingerprint.stage_fingerprint``); a checkpoint is resumed
    only under the same one. Returns its metrics and its run record (times, resume point)."""
    fp = params.finetune
    seed = params.seed if fp.seed is None else fp.seed  # training seed; the validation batch keeps params.seed
    torch.manual_seed(seed)
    accelerator = make_accelerator(fp.mixed_precision)
    start = time.perf_counter()
    train = load_split(fp.cache_dir, "train")
    tokens, mask, _ = load_text_cache(fp.cache_dir)
    model, groups, trainable = build_denoiser(params, train, tokens.shape[-1])
    scheduler = training_scheduler(fp)
    sampler = BatchSampler(train, tokens, mask, fp, seed + 1000 * accelerator.process_index)
    val_batch = fixed_val_batch(load_split(fp.cache_dir, "val"), tokens, mask, fp, params.seed)
    unet, adapter, encoder = model.unet, model.adapter, model.reference_encoder
    reference_attention = model.reference_attention
    conditioning = {id(p): p for m in (adapter, reference_attention) if m is not None for p in m.parameters()}
    log.info(
        "%s: U-Net %.2f M params, adapter/reference attention %.2f M params, reference encoder %s, "
        "%.2f M trainable, %d train windows",
        name,
        sum(p.numel() for p in unet.parameters() if id(p) not in conditioning) / 1e6,
        sum(p.numel() for p in conditioning.values()) / 1e6,
        "trained" if encoder is not None else "frozen (cached embeddings)",
        sum(p.numel() for p in trainable) / 1e6,
        len(train.windows),
    )
    # The system and the precision in use join the fingerprint: `auto` may resolve otherwise on another machine,
    # and a checkpoint trained in one precision is not resumed in another.
    resume_key = {**fingerprint, "system": name, "precision": accelerator.mixed_precision}
    checkpoints = fp.model_copy(update={"checkpoint_dir": str(Path(fp.checkpoint_dir) / name)})
    objective = denoising_objective(scheduler, fp)
    result = train_denoiser(
        model, groups, trainable, objective, sampler, val_batch, checkpoints, accelerator, resume_key
    )
    model.release()  # the U-Net is saved on its own, the reference attention beside it
    seconds = time.perf_counter() - start
    history = result.history
    metrics = {
        **result.metrics(),
        "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 3),
        "processes": accelerator.num_processes,
    }
    record = result.run_record(seconds, accelerator.mixed_precision)
    if accelerator.is_main_process:
        pipe = assemble_pipeline(
            params,
            unet.float().cpu(),
            adapter.float().cpu() if adapter else None,
            scheduler,
            encoder.float().cpu() if encoder is not None else None,
            reference_attention.float().cpu() if reference_attention is not None else None,
        )
        pipe.save_pretrained(fp.out_dir)
        report = Path(fp.report_dir) / ("" if name == "seap" else name)
        report.mkdir(parents=True, exist_ok=True)
        write_history(report, history, png=name == "seap")
        log.info("%s: %d steps (resumed from %d) in %.0f s", name, result.steps, result.resumed_from, seconds)
    accelerator.wait_for_everyone()
    return metrics, record


def write_history(out: Path, history: dict, png: bool = True) -> None:
    """Loss curves as CSV (DVC plots) and a PNG."""
    with open(out / "loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "train_loss", "lr"])
        w.writerows(history["train"])
    with open(out / "val_loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "val_loss"])
        w.writerows(history["val"])
    if png:
        plot_losses(history, out / "loss.png")
