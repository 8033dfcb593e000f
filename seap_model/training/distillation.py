"""The distilled few-step pipeline end to end: the fine-tuned pipeline as teacher, a student that starts as its
copy (plus a zero-initialised input for the guidance scales), trained on the fine-tune cache with the consistency
objective (``seap_model.training.consistency``) in the fine-tune's loop (checkpoints, resume), saved as a
``SEAPPipeline`` that samples with diffusers' ``LCMScheduler`` in 1-4 steps, one U-Net call each."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping

import torch
from diffusers import DDPMScheduler, LCMScheduler

from seap_model.config import Params
from seap_model.models.unet import add_guidance_input
from seap_model.pipeline import SEAPPipeline
from seap_model.training.batches import fixed_val_batch
from seap_model.training.consistency import ConsistencyDistillation, DistillSampler
from seap_model.training.dataset import load_split, load_text_cache
from seap_model.training.denoiser import StyledDenoiser
from seap_model.training.loop import Objective, make_accelerator, train_denoiser

log = logging.getLogger(__name__)


def distill_pipeline(params: Params, fingerprint: Mapping[str, str]) -> tuple[SEAPPipeline, dict, dict, dict]:
    """Distill ``finetune.out_dir`` into a few-step pipeline (resuming ``distill.checkpoint_dir`` when it was made
    from the same ``fingerprint``). Returns the pipeline (not yet saved), its metrics, its run record and its loss
    history."""
    dp, fp = params.distill, params.finetune
    seed = params.seed if fp.seed is None else fp.seed
    torch.manual_seed(seed)
    accelerator = make_accelerator(fp.mixed_precision)
    start = time.perf_counter()
    teacher_pipe = SEAPPipeline.from_pretrained(fp.out_dir)
    if teacher_pipe.config.distilled_guidance is not None:
        raise ValueError(f"distill: {fp.out_dir} is itself a distilled pipeline; the teacher must be a fine-tuned one")
    frames = teacher_pipe.reference_form == "frames"
    # The student's U-Net is copied before the teacher's gets its reference attention attached.
    student_unet = add_guidance_input(teacher_pipe.unet, dp.guidance_dim)
    adapter, attention = (copy.deepcopy(m) for m in (teacher_pipe.adapter, teacher_pipe.reference_attention))
    teacher = StyledDenoiser(teacher_pipe.unet, teacher_pipe.adapter, None, teacher_pipe.reference_attention, frames)
    student = StyledDenoiser(student_unet, adapter, None, attention, frames).train()
    target = copy.deepcopy(student)

    train = load_split(fp.cache_dir, "train")
    tokens, mask, _ = load_text_cache(fp.cache_dir)
    loop_params = fp.model_copy(
        update={
            "steps": dp.steps,
            "batch_size": dp.batch_size,
            "gradient_accumulation": 1,
            "lr": dp.lr,
            "warmup_steps": min(dp.warmup_steps, dp.steps),
            "ema_decay": 0.0,  # the target is the moving average here; the student is saved as trained
            "checkpoint_dir": dp.checkpoint_dir,
            "checkpoint_every": dp.checkpoint_every,
            "log_every": dp.log_every,
            "drop_both": 0.0,
            "drop_style": 0.0,
            "drop_text": 0.0,
        }
    )
    ranges = {"text": dp.text_guidance, "style": dp.style_guidance, "drop": dp.drop_reference}
    sampler = DistillSampler(train, tokens, mask, loop_params, seed, solver_steps=dp.solver_steps, **ranges)
    scheduler = DDPMScheduler.from_config(teacher_pipe.scheduler.config)
    cd = ConsistencyDistillation(
        teacher,
        student,
        target,
        scheduler,
        tokens[:1],
        mask[:1],
        dp.solver_steps,
        dp.guidance_dim,
        dp.target_decay,
        dp.huber_c,
    )
    val = fixed_val_batch(load_split(fp.cache_dir, "val"), tokens, mask, loop_params, params.seed)
    if val is not None:  # fixed grid points and the default scales (4, within the ranges): comparable steps
        n = len(val["latents"])
        val["solver_index"] = torch.linspace(0, dp.solver_steps - 1, n).round().long()
        scales = torch.tensor([min(max(4.0, low), high) for low, high in (dp.text_guidance, dp.style_guidance)])
        val["guidance"] = scales.repeat(n, 1)
        val["guidance"][~val["keep_reference"], 1] = 0.0
    trainable = list(student.parameters())
    objective = Objective(cd.loss, cd.after_step, [target], "distill")
    resume_key = {**fingerprint, "precision": accelerator.mixed_precision}
    result = train_denoiser(
        student, [{"params": trainable}], trainable, objective, sampler, val, loop_params, accelerator, resume_key
    )
    student.release()
    teacher.release()
    pipe = SEAPPipeline(
        unet=student_unet.float().cpu().eval(),
        scheduler=LCMScheduler.from_config(teacher_pipe.scheduler.config, original_inference_steps=dp.solver_steps),
        text_encoder=teacher_pipe.text_encoder,
        tokenizer=teacher_pipe.tokenizer,
        reference_encoder=teacher_pipe.reference_encoder,
        adapter=adapter.float().cpu().eval() if adapter is not None else None,
        reference_attention=attention.float().cpu().eval() if attention is not None else None,
        codec=teacher_pipe.codec,
        vocoder=teacher_pipe.vocoder,
        max_text_length=teacher_pipe.config.max_text_length,
        duration=teacher_pipe.config.duration,
        default_steps=dp.sampling_steps,
        distilled_guidance=[list(dp.text_guidance), list(dp.style_guidance)],
    )
    seconds = time.perf_counter() - start
    metrics = {
        **result.metrics(),
        "sampling_steps": dp.sampling_steps,
        "guidance_ranges": {"text": list(dp.text_guidance), "style": list(dp.style_guidance)},
    }
    record = result.run_record(seconds, accelerator.mixed_precision)
    log.info("distill: %d steps (resumed from %d) in %.0f s", result.steps, result.resumed_from, seconds)
    return pipe, metrics, record, result.history
