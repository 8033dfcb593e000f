"""The noise schedule a model is trained with, and the sampler saved with it (any diffusers scheduler can be
swapped in later with ``from_config``)."""

from __future__ import annotations

from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from seap_model.config import FinetuneParams
from seap_model.samplers import named_sampler


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
    return named_sampler(train, "dpmpp-2m")
