"""The finetune stage: train the adapter and the style-modulated U-Net on the cache, save the ``SEAPPipeline``.

Inputs come only from the cache stage (latents, caption tokens, reference embeddings), so no frozen
model runs during training. The checkpoint in ``finetune.checkpoint_dir`` is resumed only if it was made
from the same cache content, params and training code (``seap_model.dag.stage_fingerprint``).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from pathlib import Path

import torch
from accelerate import PartialState
from diffusers import DDPMScheduler

from seap_model.config import Params
from seap_model.fingerprint import stage_fingerprint
from seap_model.models.adapter import StyleAdapter
from seap_model.models.loading import load_codec, load_reference_encoder
from seap_model.models.reference_attention import ReferenceAttention
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.text_encoder import load_text_encoder
from seap_model.models.unet import build_unet
from seap_model.models.vocoder import make_vocoder
from seap_model.pipeline import SEAPPipeline
from seap_model.plots import plot_losses
from seap_model.progress import write_run_record
from seap_model.training.batches import BatchSampler, fixed_val_batch
from seap_model.training.dataset import SplitCache, load_split, load_text_cache
from seap_model.training.denoiser import StyledDenoiser, trainable_parameters
from seap_model.training.loop import make_accelerator, train_denoiser
from seap_model.training.schedulers import sampling_scheduler, training_scheduler

log = logging.getLogger(__name__)
BASELINE_MISSING = "not_trained.json"  # in finetune.baseline_dir when no baseline was trained (and why)


def build_denoiser(params: Params, train: SplitCache, text_dim: int) -> tuple[StyledDenoiser, list[dict], list]:
    """The model to train (U-Net; the adapter for ``style`` cross_attention/concat, the reference attention for
    decoupled; the encoder with ``train_encoder``), its optimiser parameter groups and every trained parameter."""
    fp = params.finetune
    frames = fp.style != "off" and fp.adapter.reference == "frames"
    if frames and train.reference_frames is None and not fp.train_encoder:
        raise ValueError(
            f"finetune.adapter.reference 'frames': {fp.cache_dir} holds no reference frames; re-run the cache stage"
        )
    reference_dim = (
        (train.reference_frames.shape[-1] if train.reference_frames is not None else None)
        if frames
        else train.references.shape[-1]
    )
    encoder = trainable_encoder(params, train) if fp.train_encoder else None
    if reference_dim is None:  # frames from the encoder being trained
        reference_dim = encoder.frame_dim
    with_adapter = fp.style in ("cross_attention", "concat")
    unet = build_unet(fp.unet, train.latents.shape[1], text_dim, text_dim if with_adapter else None)
    adapter = (
        StyleAdapter(text_dim, reference_dim, fp.adapter.heads, fp.style, fp.adapter.reference)
        if with_adapter
        else None
    )
    reference_attention = (
        ReferenceAttention.for_unet(unet, reference_dim, fp.adapter.reference, fp.adapter.tokens)
        if fp.style == "decoupled"
        else None
    )
    trainable = trainable_parameters(unet, adapter, fp.trainable, reference_attention)
    groups: list[dict] = [{"params": trainable}]
    if encoder is not None:
        groups.append({"params": list(encoder.parameters()), "lr": fp.lr * fp.encoder_lr_scale})
        trainable = trainable + groups[-1]["params"]
    if fp.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return StyledDenoiser(unet, adapter, encoder, reference_attention, frames), groups, trainable


def finetune(params: Params) -> dict:
    """Train SEAP (and, with ``finetune.baseline``, the text-only baseline the same way), resuming checkpoints of
    the same inputs; save each pipeline, its loss curves and the metrics."""
    fp = params.finetune
    metrics, record = train_system(params, "seap")
    main = PartialState().is_main_process
    baseline = Path(fp.baseline_dir)
    if main:
        shutil.rmtree(baseline, ignore_errors=True)
    if fp.baseline and fp.style != "off":
        text_only = params.model_copy(
            update={"finetune": fp.model_copy(update={"style": "off", "out_dir": fp.baseline_dir})}
        )
        metrics["text_only"], record["text_only"] = train_system(text_only, "text_only")
    elif main:  # the declared output still exists, and says why it holds no model
        baseline.mkdir(parents=True)
        off = fp.style == "off"
        why = "finetune.style is off: the model is itself text-only" if off else "finetune.baseline: false"
        (baseline / BASELINE_MISSING).write_text(json.dumps({"trained": False, "why": why}) + "\n")
    if main:
        out = Path(fp.report_dir)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_run_record(out, record)
    return metrics


def train_system(params: Params, name: str) -> tuple[dict, dict]:
    """Train one system (``seap`` or ``text_only``: ``params.finetune`` says which) with its own checkpoints
    (``<checkpoint_dir>/<name>``) and curves (the text-only baseline's under ``<report_dir>/text_only``).
    Returns its metrics and its run record (times, resume point)."""
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
    # The precision in use joins the fingerprint: `auto` may resolve otherwise on another machine, and a
    # checkpoint trained in one precision is not resumed in another.
    fingerprint = {**stage_fingerprint("finetune", params), "system": name, "precision": accelerator.mixed_precision}
    checkpoints = fp.model_copy(update={"checkpoint_dir": str(Path(fp.checkpoint_dir) / name)})
    result = train_denoiser(
        model, groups, trainable, scheduler, sampler, val_batch, checkpoints, accelerator, fingerprint
    )
    model.release()  # the U-Net is saved on its own, the reference attention beside it
    seconds = time.perf_counter() - start
    history = result.history
    metrics = {
        "steps": result.steps,
        "final_train_loss": history["train"][-1][1] if history["train"] else None,
        "final_val_loss": history["val"][-1][1] if history["val"] else None,
        "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 3),
        "processes": accelerator.num_processes,
    }
    trained = result.steps - result.resumed_from
    record = {
        "resumed_from_step": result.resumed_from,
        "steps_trained": trained,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, trained), 4),
        "mixed_precision": accelerator.mixed_precision,
    }
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
    params: Params,
    unet,
    adapter,
    train_scheduler: DDPMScheduler,
    reference_encoder: ReferenceEncoder | None = None,
    reference_attention: ReferenceAttention | None = None,
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
        reference_attention=reference_attention.eval() if reference_attention is not None else None,
        codec=load_codec(params.codec.out_dir),
        vocoder=make_vocoder(v.type, v.pretrained, params.audio.mel(), v.griffin_lim_iters),
        max_text_length=params.text_encoder.max_length,
        duration=params.finetune.train_seconds,
    )


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
